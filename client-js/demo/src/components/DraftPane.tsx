import { useState } from "react";
import { newClientId, PalaverError, type PendingMessage, type RoomId, type User } from "@palaver/client";
import { useConnection } from "@palaver/client/react";

import { Avatar } from "./Avatar";
import { Composer } from "./Composer";
import { MembersPanel } from "./MembersPanel";
import { MessageItem } from "./MessageItem";
import { RoomHeader } from "./RoomHeader";

interface Props {
  peer: User;
  me: User | undefined;
  /** The first message is stored: the DM room exists, open it. */
  onStarted(room: RoomId): void;
}

const nothing = async () => {};

/**
 * A direct message to someone the user has no conversation with yet: the first message goes with `client.dm`,
 * which makes the DM room; then the room opens like any other.
 */
export function DraftPane({ peer, me, onStarted }: Props) {
  const { client } = useConnection();
  const [sends, setSends] = useState<PendingMessage[]>([]);

  async function deliver(clientId: string, text: string) {
    const at = new Date().toISOString();
    const from = { id: me?.id ?? "", name: me?.name ?? "" };
    const pending: PendingMessage = { status: "pending", key: clientId, clientId, room: "", text, from, at };
    setSends((list) => [...list.filter((p) => p.clientId !== clientId), pending]);
    try {
      if (!client) throw new PalaverError("disconnected", "Not connected to the server.");
      const message = await client.dm(peer.id, text, { clientId });
      onStarted(message.room);
    } catch (err) {
      const error = err instanceof PalaverError ? err : new PalaverError("internal", String(err));
      setSends((list) => list.map((p) => (p.clientId === clientId ? { ...p, status: "failed", error } : p)));
    }
  }

  return (
    <>
      <main className="chat" aria-label="Conversation">
        <RoomHeader icon="@" title={peer.name} sub="new direct message" />
        <div className="timeline">
          <div id="messages" className="messages" role="log" aria-live="polite" aria-label="Messages">
            <div className="room-intro">
              <Avatar name={peer.name} size="large" />
              <h2>{peer.name}</h2>
              <p>This is the beginning of your direct messages with {peer.name}. Say hello!</p>
            </div>
            {sends.map((m) => (
              <MessageItem
                key={m.key}
                m={m}
                compact={false}
                mine
                moderator={false}
                quote={undefined}
                seen={false}
                onReply={() => {}}
                onEdit={nothing}
                onRemove={nothing}
                onReact={() => {}}
                onRetry={(p) => void deliver(p.clientId, p.text)}
                onDiscard={(id) => setSends((list) => list.filter((p) => p.clientId !== id))}
              />
            ))}
          </div>
        </div>
        <Composer
          placeholder={`Message @${peer.name}`}
          disabled={!client}
          onCancelReply={() => {}}
          onSend={(text) => void deliver(newClientId(), text)}
          onTyping={() => {}}
          typing={[]}
        />
      </main>
      <MembersPanel
        users={me ? [me, peer] : [peer]}
        me={me}
        blockedUsers={new Set()}
        onStartDm={() => {}}
        onBlockChanged={() => {}}
      />
    </>
  );
}
