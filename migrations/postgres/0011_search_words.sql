-- palaver schema v11 (Postgres): the full-text index is built over words palaver extracts and stores with each
-- message, instead of over an expression Postgres evaluates for every row. Append-only.
--
-- 0008 indexed to_tsvector('simple', regexp_replace(text, '[^[:alnum:]]+', ' ', 'g')). Evaluating that expression
-- was most of what the index cost a send: the regular expression and the text-search parser took ~9 µs of Postgres
-- a message, against ~1 µs to make a tsvector of words given (BENCHMARKS.md §10). The words are the same as before:
-- runs of letters and digits, lowercased, each once, no stemming; without positions, which searches never use (they
-- neither rank nor match phrases). palaver cuts them (src/store/search.rs, index_words) for a send and for an edit,
-- and cuts a query's words by the same rule; Postgres only turns the list into a tsvector (array_to_tsvector parses
-- nothing). So what palaver stores is found the same whatever the database's locale (with LC_CTYPE=C, Postgres's
-- [[:alnum:]] and lower() know only ASCII).
--
-- The column costs a row its words again (about the size of its text), in the table and in the WAL; measured, far
-- cheaper than the expression.
ALTER TABLE messages ADD COLUMN search_words tsvector;

-- The same rule in SQL, for what the database indexes itself: the messages stored before this migration, and a
-- text written without its words (below). Lowercasing is the database's (lower()), which agrees with palaver's
-- but for rare letters. Words longer than 2,047 bytes are left out, as the parser left them out (Postgres refuses
-- a longer lexeme).
CREATE FUNCTION palaver_search_words(body TEXT) RETURNS tsvector
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
        SELECT array_to_tsvector(ARRAY(
            SELECT DISTINCT lower(word) FROM regexp_split_to_table(body, '[^[:alnum:]]+') AS word
            WHERE word <> '' AND octet_length(lower(word)) <= 2047))
    $$;

-- One pass over the stored messages; tombstones have no text and stay out of the index (NULL matches nothing). On a
-- large table this rewrites every row once, in the migration's transaction.
UPDATE messages SET search_words = palaver_search_words(text) WHERE deleted_at IS NULL;

-- A message written without its words gets them from the database: an INSERT by a server of the previous release
-- during a rolling restart, and any change of a text that does not also set its words (a delete's tombstone, which
-- gets none; an edit by the previous release; a text changed by hand), so that no text is found by words it no
-- longer holds. palaver's own sends carry their words, so the INSERT trigger never runs for them (its WHEN is
-- false); palaver's edit writes its words after the text (src/store/sql.rs, index_edited_text).
CREATE FUNCTION palaver_index_message_text() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        NEW.search_words := CASE WHEN NEW.deleted_at IS NULL THEN palaver_search_words(NEW.text) END;
        RETURN NEW;
    END
    $$;

CREATE TRIGGER messages_search_words_insert BEFORE INSERT ON messages
    FOR EACH ROW WHEN (NEW.search_words IS NULL)
    EXECUTE FUNCTION palaver_index_message_text();

CREATE TRIGGER messages_search_words_update BEFORE UPDATE OF text ON messages
    FOR EACH ROW WHEN (NEW.text IS DISTINCT FROM OLD.text AND NEW.search_words IS NOT DISTINCT FROM OLD.search_words)
    EXECUTE FUNCTION palaver_index_message_text();

-- The index moves to the column, keeping 0009's larger pending list (merged by the server every second).
DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING GIN (search_words) WITH (gin_pending_list_limit = 65536);
