import { colourFor, initials } from "../format";

/** A round badge with a name's initial, in the name's colour. */
export function Avatar({ name, size }: { name: string; size?: "small" | "large" | "me" }) {
  return (
    <span
      className={`avatar${size ? ` avatar-${size}` : ""}`}
      style={{ background: colourFor(name) }}
      aria-hidden="true"
    >
      {initials(name)}
    </span>
  );
}
