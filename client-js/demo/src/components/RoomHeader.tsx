import type { ReactNode } from "react";

interface Props {
  icon: ReactNode;
  title: string;
  sub: string;
  /** Right-hand side: search, block, leave. */
  children?: ReactNode;
}

/** The bar above a conversation. */
export function RoomHeader({ icon, title, sub, children }: Props) {
  return (
    <header className="chat-header">
      <span id="room-icon" className="chat-icon" aria-hidden="true">
        {icon}
      </span>
      <h1 id="room-title" className="chat-title">
        {title}
      </h1>
      <span id="room-sub" className="chat-sub">
        {sub}
      </span>
      <span className="spacer" />
      {children}
    </header>
  );
}
