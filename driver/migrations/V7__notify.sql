-- Immediate runs (ARCHITECTURE.md: A history's life): the database tells listeners when there is
-- something to run and when a history changed state, whoever wrote it — `facematch submit`, the
-- HTTP API or an application's plain INSERT.
--
--   facematch_pending         payload '' — a history became PENDING (inserted, or requeued). One
--                             notification per transaction: Postgres folds identical payloads, so
--                             a bulk INSERT of 10,000 histories wakes a watcher once.
--   facematch_history_status  payload {"id": …, "status": "…"} — every status change, RUNNING
--                             included (what a page showing one search follows).
--   facematch_history_done    payload {"id": …, "status": "FINISHED" | "ERROR"} — a history ended.
--   facematch_dataset         payload {"id": …, "name": "…", "version": …} — a version became current.
--
-- NOTIFY is delivered only when the transaction commits, so a listener that hears FINISHED finds
-- the items already there (they commit with the status, store::histories::finish).

CREATE FUNCTION histories_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('id', NEW.id, 'status', NEW.status)::text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    IF NEW.status = 'PENDING' THEN
        PERFORM pg_notify('facematch_pending', '');
    END IF;
    PERFORM pg_notify('facematch_history_status', payload);
    IF NEW.status IN ('FINISHED', 'ERROR') THEN
        PERFORM pg_notify('facematch_history_done', payload);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER histories_notify
    AFTER INSERT OR UPDATE OF status ON histories
    FOR EACH ROW EXECUTE FUNCTION histories_notify();

-- A new current dataset version: a watcher loads it before its next pass.
CREATE FUNCTION datasets_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.is_current AND (TG_OP = 'INSERT' OR NOT OLD.is_current) THEN
        PERFORM pg_notify('facematch_dataset', json_build_object('id', NEW.id, 'name', NEW.name,
                                                                  'version', NEW.version)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER datasets_notify
    AFTER INSERT OR UPDATE OF is_current ON datasets
    FOR EACH ROW EXECUTE FUNCTION datasets_notify();
