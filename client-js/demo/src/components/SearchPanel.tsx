import { useState, type FormEvent, type ReactNode } from "react";
import type { RoomId, SearchResult } from "@palaver/client";
import { useConnection, useRooms } from "@palaver/client/react";

import { clock, colourFor, errorText, fullTime } from "../format";

type State =
  | { status: "idle" }
  | { status: "searching"; query: string }
  | { status: "done"; query: string; results: SearchResult[]; hasMore: boolean }
  | { status: "error"; query: string; error: string };

/** The matched words of a result marked, from the server's spans: text and <mark> elements, never HTML. */
function highlighted(text: string, spans: readonly [number, number][]): ReactNode[] {
  const out: ReactNode[] = [];
  let at = 0;
  for (const [start, end] of [...spans].sort((a, b) => a[0] - b[0])) {
    if (start < at || end <= start || end > text.length) continue;
    if (start > at) out.push(text.slice(at, start));
    out.push(<mark key={start}>{text.slice(start, end)}</mark>);
    at = end;
  }
  out.push(text.slice(at));
  return out;
}

/** Searching messages (`messages:search`): every room the user can read, or this one; a result opens its room. */
export function SearchPanel({ room, onOpen }: { room: RoomId; onOpen(room: RoomId, seq: number): void }) {
  const { client } = useConnection();
  const { rooms } = useRooms();
  const [query, setQuery] = useState("");
  const [here, setHere] = useState(false);
  const [state, setState] = useState<State>({ status: "idle" });

  async function submit(e: FormEvent) {
    e.preventDefault();
    const q = query.trim();
    if (!client || !q) return;
    setState({ status: "searching", query: q });
    try {
      const reply = await client.search(q, here ? { room, limit: 20 } : { limit: 20 });
      setState({ status: "done", query: q, results: reply.results, hasMore: reply.hasMore });
    } catch (err) {
      setState({ status: "error", query: q, error: errorText(err) });
    }
  }

  function label(id: RoomId): string {
    const summary = rooms.find((r) => r.id === id);
    return summary?.kind === "dm" ? `@${summary.peer?.name ?? "direct message"}` : `#${id}`;
  }

  return (
    <div className="search">
      <form id="search-form" role="search" onSubmit={submit}>
        <input
          id="search-input"
          type="search"
          placeholder="Search messages"
          aria-label="Search messages"
          maxLength={200}
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <label className="search-here" title="Search this room only">
          <input type="checkbox" id="search-here" checked={here} onChange={(e) => setHere(e.target.checked)} /> here
        </label>
      </form>
      {state.status !== "idle" && (
        <div id="search-results" className="search-results" role="region" aria-label="Search results">
          <div className="search-head">
            <span>
              {state.status === "searching" ? "Searching" : "Results"} for “{state.query}”
            </span>
            <button type="button" className="link" onClick={() => setState({ status: "idle" })}>
              Close
            </button>
          </div>
          {state.status === "error" && <p className="search-empty search-error">{state.error}</p>}
          {state.status === "done" && state.results.length === 0 && <p className="search-empty">No messages found.</p>}
          {state.status === "done" && (
            <ul className="search-list">
              {state.results.map(({ message: m, highlights }) => (
                <li key={m.id}>
                  <button
                    type="button"
                    className="search-result"
                    data-room={m.room}
                    data-seq={m.seq}
                    onClick={() => {
                      setState({ status: "idle" });
                      onOpen(m.room, m.seq);
                    }}
                  >
                    <span className="search-meta">
                      <span className="search-room">{label(m.room)}</span>
                      <span className="search-author" style={{ color: colourFor(m.from.name) }}>
                        {m.from.name}
                      </span>
                      <time dateTime={m.at} title={fullTime(m.at)}>
                        {clock(m.at)}
                      </time>
                    </span>
                    <span className="search-text">{highlighted(m.text, highlights)}</span>
                  </button>
                </li>
              ))}
            </ul>
          )}
          {state.status === "done" && state.hasMore && <p className="search-empty">Showing the newest 20.</p>}
        </div>
      )}
    </div>
  );
}
