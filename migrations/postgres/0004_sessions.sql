-- palaver schema v4 (postgres): sessions palaver issues after exchanging a host's one-time code. Append-only.

-- Refresh tokens. Only the SHA-256 of a token is kept (hex): a leaked table does not let anyone refresh. Every
-- refresh rotates the token: the old row gets rotated_at and a new row joins the same family. A rotated token
-- that comes back means it was stolen (or replayed), so the whole family is revoked and its user must sign in
-- again. The user's id and name are copied here because palaver has no users table: the host is the authority,
-- and the access token needs both.
CREATE TABLE refresh_tokens (
    hash        TEXT PRIMARY KEY,
    family      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    user_name   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    rotated_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- One-time codes already redeemed (SHA-256, hex): a code works once even if the host forgets to enforce it, and
-- even when two palaver nodes receive it at once (the primary key decides).
CREATE TABLE redeemed_codes (
    hash         TEXT PRIMARY KEY,
    redeemed_at  TIMESTAMPTZ NOT NULL
);
