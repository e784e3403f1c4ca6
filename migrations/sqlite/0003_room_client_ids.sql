-- palaver schema v3 (sqlite): idempotency keys scoped to a room. Append-only, like every migration.

-- A client id normally tells apart the retries of one sender (unique per room and sender: messages_client_id).
-- Some apps migrating through a compatibility profile make their keys unique themselves and retry from a new
-- connection, under a new guest identity (the Socket.IO tutorial's clientOffset): their key must be unique per
-- room, whoever sends it. Such messages carry the key here too, and this index makes it unique per room and
-- finds the original of a retry. A separate nullable column rather than an index on (ns, room, client_id): the
-- sender-scoped keys of palaver's own contract may repeat across senders in a room, and they stay NULL here, so
-- they cost this index nothing. Adding a nullable column without a default does not rewrite the table.
ALTER TABLE messages ADD COLUMN room_client_id TEXT;
CREATE UNIQUE INDEX messages_room_client_id ON messages (ns, room, room_client_id) WHERE room_client_id IS NOT NULL;
