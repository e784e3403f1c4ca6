-- palaver schema v2 (Postgres): invitations and room creators. Append-only, like every migration.

-- A membership row is either a member ('joined') or an open invitation ('invited'): someone else added the user,
-- who sees the room but enters it only by accepting. One row per (room, user) either way, so accepting is an
-- update of the row, and "already a member or invited" is the primary key. The default keeps every existing
-- row a member. Adding a column with a constant default does not rewrite the table; the CHECK is validated by
-- one scan.
ALTER TABLE memberships
    ADD COLUMN state TEXT NOT NULL DEFAULT 'joined' CHECK (state IN ('joined', 'invited'));

-- Who sent the invitation: their id and their display name at the time, so the invitation can name them even
-- after they left the room. NULL for rows that never were invitations (existing ones included). Kept when the
-- invitation is accepted. `joined_at` is when the row entered its current state: when an invitation was sent,
-- and when a member joined or accepted.
ALTER TABLE memberships ADD COLUMN invited_by TEXT;
ALTER TABLE memberships ADD COLUMN invited_by_name TEXT;

-- The reads by user filter on the state: a user's joined rooms (re-entry on connect, the `session` event) and
-- their invitations, newest first. Leading with (ns, user_id, state) serves both from one index, so the
-- memberships_by_user index of v1 is replaced rather than joined by a second one that every write would pay for.
DROP INDEX memberships_by_user;
CREATE INDEX memberships_by_user ON memberships (ns, user_id, state, joined_at DESC);

-- Who created the room (user id), for creation quotas. NULL for rooms created before v2, whose creator was not
-- recorded, and for DMs, which belong to both users and count against no one's quota.
ALTER TABLE rooms ADD COLUMN created_by TEXT;

-- Serves "rooms this user created in the namespace since T" as one index range scan. Partial: rooms without a
-- creator are never counted, so they need no entry.
CREATE INDEX rooms_by_creator ON rooms (ns, created_by, created_at) WHERE created_by IS NOT NULL;
