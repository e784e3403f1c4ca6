// Names, colours and times as the page shows them.

import { isPalaverError } from "@palaver/client";

const NAME_COLOURS = [
  "#f47067", // coral
  "#f69d50", // orange
  "#e5c07b", // sand
  "#7ee787", // green
  "#56d4dd", // cyan
  "#6cb6ff", // blue
  "#b392f0", // violet
  "#f778ba", // pink
  "#4fd1a5", // teal
  "#ffa198", // salmon
];

function hash(text: string): number {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

/** A stable, readable colour for a display name (a guest keeps its colour across reconnections). */
export function colourFor(name: string): string {
  return NAME_COLOURS[hash(name.trim().toLowerCase()) % NAME_COLOURS.length];
}

/** One or two letters for an avatar. */
export function initials(name: string): string {
  const words = name.trim().split(/[\s_.-]+/).filter(Boolean);
  if (words.length === 0) return "?";
  const first = Array.from(words[0])[0] ?? "?";
  return first.toUpperCase();
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric", year: "numeric" });

export function clock(at: string | Date): string {
  return timeFmt.format(new Date(at));
}

export function fullTime(at: string | Date): string {
  return fullFmt.format(new Date(at));
}

export function dayKey(at: string | Date): string {
  const d = new Date(at);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(at: string | Date): string {
  const d = new Date(at);
  const today = new Date();
  const yesterday = new Date(today.getTime() - 86_400_000);
  if (dayKey(d) === dayKey(today)) return "Today";
  if (dayKey(d) === dayKey(yesterday)) return "Yesterday";
  return dayFmt.format(d);
}

/** The start of a message's text, as a reply quotes it (the server's excerpt is 100 characters too). */
export function excerpt(text: string, max = 100): string {
  const chars = Array.from(text.replace(/\s+/g, " ").trim());
  return chars.length > max ? `${chars.slice(0, max).join("")}…` : chars.join("");
}

/** "ada is typing…", "ada and bob are typing…", "ada, bob and 2 others are typing…" */
export function typingLine(names: string[]): string {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return `${names[0]}, ${names[1]} and ${names.length - 2} others are typing…`;
}

/** A room id from what someone typed: "#Team chat" → "Team-chat". */
export function roomIdFrom(input: string): string {
  return input.trim().replace(/^#+/, "").trim().replace(/\s+/g, "-");
}

export const ROOM_ID = /^[A-Za-z0-9_.:-]{1,64}$/;

/** What a failed call says to the user. */
export function errorText(err: unknown): string {
  if (isPalaverError(err, "rate_limited")) return "You are sending too fast — wait a moment and try again.";
  if (isPalaverError(err, "unavailable")) return "The server cannot store messages right now — try again shortly.";
  if (isPalaverError(err, "timeout")) return "The server did not answer in time.";
  if (isPalaverError(err, "disconnected")) return "Not connected to the server.";
  return err instanceof Error ? err.message : String(err);
}
