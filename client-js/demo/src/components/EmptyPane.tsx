import type { PalaverError } from "@palaver/client";

import { token } from "../config";

/** The middle and right columns when no room is open: a welcome, or why the server refused the connection. */
export function EmptyPane({ refused }: { refused?: PalaverError }) {
  return (
    <>
      <main className="chat" aria-label="Conversation">
        <header className="chat-header">
          <span className="chat-icon" aria-hidden="true">
            #
          </span>
          <h1 id="room-title" className="chat-title">
            palaver
          </h1>
        </header>
        {refused && <RefusedBanner refused={refused} />}
        <div id="messages" className="messages" role="log" aria-label="Messages">
          <div id="empty-state" className="empty-state">
            <h2>Welcome to palaver</h2>
            <p>Join or create a room on the left, or click someone who is online to send a direct message.</p>
          </div>
        </div>
        <div className="composer-wrap">
          <form className="composer" onSubmit={(e) => e.preventDefault()}>
            <input id="composer-input" placeholder="Join a room to start chatting" aria-label="Message" disabled />
            <button type="submit" className="btn" disabled>
              Send
            </button>
          </form>
          <div id="typing" className="typing" />
        </div>
      </main>
      <aside className="members" aria-label="Online">
        <h2 id="online-title" className="nav-title">
          Online
        </h2>
        <ul id="online-list" className="member-list" />
      </aside>
    </>
  );
}

/** The server refused the connection (an expired token, a bad name): nothing will be retried. */
export function RefusedBanner({ refused }: { refused: PalaverError }) {
  return (
    <div id="banner" className="banner" role="alert">
      The server refused this connection ({refused.code}: {refused.message}).{" "}
      {token ? "Check the ?token= in the address, or remove it to join as a guest." : "Check the ?name= in the address."}
    </div>
  );
}
