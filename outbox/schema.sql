-- cachewire transactional outbox (package outbox). A service inserts one row per change in the
-- same transaction as the change itself; the relay publishes rows in seq order and deletes each
-- one only after Kafka acknowledged it. Apply with outbox.Apply, or copy into your migrations.
CREATE TABLE IF NOT EXISTS cachewire_outbox (
    seq          bigserial   PRIMARY KEY,
    key          text        NOT NULL,
    -- UPSERT, DELETE, INVALIDATE or EVICT (see proto/cachewire/v1/event.proto)
    op           text        NOT NULL,
    -- grows per key, across deletes and re-inserts (a bigint bumped in every UPDATE, or a
    -- sequence shared by all rows); 0 only for EVICT
    version      bigint      NOT NULL,
    -- the new value for UPSERT, when it is small enough to travel with the event; else NULL
    value        bytea,
    committed_at timestamptz NOT NULL DEFAULT now()
);

-- The W3C trace context (traceparent) of the transaction that wrote the row, when it was traced:
-- the relay publishes it with the event, so one trace follows the write to every cache node.
-- Added to tables made before it; the relay works without it (and Enqueue writes it only for a
-- traced transaction).
ALTER TABLE cachewire_outbox ADD COLUMN IF NOT EXISTS traceparent text;

-- Rows the relay could never publish (an invalid key, op or version): kept for an operator,
-- never blocking the rows behind them.
CREATE TABLE IF NOT EXISTS cachewire_outbox_dead (
    seq          bigint      PRIMARY KEY,
    key          text        NOT NULL,
    op           text        NOT NULL,
    version      bigint      NOT NULL,
    value        bytea,
    committed_at timestamptz NOT NULL,
    error        text        NOT NULL,
    dead_at      timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay (LISTEN cachewire_outbox) when rows are committed; it also polls.
CREATE OR REPLACE FUNCTION cachewire_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cachewire_outbox', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS cachewire_outbox_notify ON cachewire_outbox;
CREATE TRIGGER cachewire_outbox_notify AFTER INSERT ON cachewire_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION cachewire_outbox_notify();
