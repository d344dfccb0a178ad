-- The delivery state machine, as 0002's is the job's. Every move of a delivery is one of
-- shared/store/deliveries.py's `MOVES`, guarded by the states it may leave; this refuses any other
-- change of status, whoever makes it. The pairs are the moves that change status (a move
-- from pending to pending, such as a claim or a backoff, changes none):
--   pending -> succeeded   an attempt succeeded
--   pending -> failed      an attempt gave up, or the endpoint was disabled while owed
--   succeeded -> pending   retried by hand (sent again with the same webhook-id)
--   failed -> pending      retried by hand
-- A finished delivery never becomes the other kind of finished without being sent again.
CREATE FUNCTION crewq_refuse_illegal_delivery_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.status, NEW.status) NOT IN (
        ('pending', 'succeeded'), ('pending', 'failed'),
        ('succeeded', 'pending'), ('failed', 'pending')
    ) THEN
        RAISE EXCEPTION 'delivery %: % -> % is not a move of the delivery state machine',
            OLD.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER webhook_deliveries_state_machine BEFORE UPDATE OF status ON webhook_deliveries
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION crewq_refuse_illegal_delivery_move();
