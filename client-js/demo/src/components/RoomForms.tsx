import { useState, type FormEvent } from "react";

interface Props {
  onJoin(name: string): boolean;
  onCreate(name: string, isPrivate: boolean): Promise<boolean>;
}

/** "Join a room…" and "Create a room…" (public, or private: members only). */
export function RoomForms({ onJoin, onCreate }: Props) {
  const [join, setJoin] = useState("");
  const [create, setCreate] = useState("");
  const [isPrivate, setPrivate] = useState(false);

  function submitJoin(e: FormEvent) {
    e.preventDefault();
    if (onJoin(join)) setJoin("");
  }

  async function submitCreate(e: FormEvent) {
    e.preventDefault();
    if (await onCreate(create, isPrivate)) {
      setCreate("");
      setPrivate(false);
    }
  }

  return (
    <div className="room-forms">
      <form id="join-form" className="inline-form" autoComplete="off" onSubmit={submitJoin}>
        <input
          id="join-input"
          placeholder="Join a room…"
          aria-label="Room to join"
          maxLength={64}
          spellCheck={false}
          value={join}
          onChange={(e) => setJoin(e.target.value)}
        />
        <button type="submit" id="join-btn" className="btn btn-small">
          Join
        </button>
      </form>
      <form id="create-form" className="inline-form" autoComplete="off" onSubmit={submitCreate}>
        <input
          id="create-input"
          placeholder="Create a room…"
          aria-label="Room to create"
          maxLength={64}
          spellCheck={false}
          value={create}
          onChange={(e) => setCreate(e.target.value)}
        />
        <button type="submit" id="create-btn" className="btn btn-small btn-ghost">
          Create
        </button>
        <label className="private-toggle" title="Only members can join a private room">
          <input type="checkbox" id="create-private" checked={isPrivate} onChange={(e) => setPrivate(e.target.checked)} />{" "}
          private
        </label>
      </form>
    </div>
  );
}
