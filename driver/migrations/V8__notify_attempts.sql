-- The status notifications of V7 also carry the history's attempts:
-- {"id": …, "status": "…", "attempts": …}. A history's statuses alone can repeat (a requeue
-- goes RUNNING → PENDING → RUNNING), and a notification can reach a listener after it read the
-- history's newer status; (attempts, status) orders them, so a follower shows each change once
-- and never goes back (`web/api.rs`, status streams). The payloads only gain a field.

CREATE OR REPLACE FUNCTION histories_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := json_build_object('id', NEW.id, 'status', NEW.status,
                                      'attempts', NEW.attempts)::text;
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
