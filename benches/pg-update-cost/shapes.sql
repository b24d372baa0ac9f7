-- The statements that benches/pg-update-cost/run.sh times, one procedure a variant. Each loops:
-- claim up to 256 due messages (FOR UPDATE SKIP LOCKED), commit, then write their results 32 at
-- a time, committing each, until nothing is due.

CREATE PROCEDURE run_current() LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    WITH due AS MATERIALIZED (
        SELECT id FROM messages WHERE channel = 'whatsapp' AND connection IS NULL
          AND status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at, id LIMIT 256 FOR UPDATE SKIP LOCKED
    ), cl AS (
        UPDATE messages m SET status = 'sending', claimed_by = 'bench',
            claimed_until = now() + interval '5 minutes'
        FROM due WHERE m.id = due.id RETURNING m.id
    ) SELECT array_agg(id ORDER BY id) INTO ids FROM cl;
    COMMIT;
    EXIT WHEN ids IS NULL;
    FOR i IN 0..7 LOOP
      CONTINUE WHEN cardinality(ids[i * 32 + 1 : i * 32 + 32]) = 0;
      WITH upd AS (
          UPDATE messages m SET status = 'sent', attempts = 1, provider = 'twilio',
              provider_message_id = 'SM' || m.id, recipient = 'whatsapp:+6281234567890',
              body = m.body, sent_at = now(), claimed_by = NULL, claimed_until = NULL
          WHERE m.id = ANY (ids[i * 32 + 1 : i * 32 + 32])
            AND CASE WHEN m.claimed_by = 'bench' THEN m.status END = 'sending'
          RETURNING m.id
      ) INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome,
          provider_message_id, claimed_by, at)
        SELECT id, 1, 'whatsapp', 'twilio', 'sent', 'SM' || id, 'bench', now() FROM upd;
      COMMIT;
    END LOOP;
  END LOOP;
END $$;

CREATE PROCEDURE run_hot_claim() LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    WITH due AS MATERIALIZED (
        SELECT id FROM messages WHERE channel = 'whatsapp' AND connection IS NULL
          AND status = 'pending' AND next_attempt_at <= now()
          AND (claimed_until IS NULL OR claimed_until <= now())
        ORDER BY next_attempt_at, id LIMIT 256 FOR UPDATE SKIP LOCKED
    ), cl AS (
        UPDATE messages m SET claimed_by = 'bench', claimed_until = now() + interval '5 minutes'
        FROM due WHERE m.id = due.id RETURNING m.id
    ) SELECT array_agg(id ORDER BY id) INTO ids FROM cl;
    COMMIT;
    EXIT WHEN ids IS NULL;
    FOR i IN 0..7 LOOP
      CONTINUE WHEN cardinality(ids[i * 32 + 1 : i * 32 + 32]) = 0;
      WITH upd AS (
          UPDATE messages m SET status = 'sent', attempts = 1, provider = 'twilio',
              provider_message_id = 'SM' || m.id, recipient = 'whatsapp:+6281234567890',
              body = m.body, sent_at = now(), claimed_by = NULL, claimed_until = NULL
          WHERE m.id = ANY (ids[i * 32 + 1 : i * 32 + 32])
            AND CASE WHEN m.claimed_by = 'bench' THEN m.status END = 'pending'
          RETURNING m.id
      ) INSERT INTO delivery_attempts (message_id, attempt, channel, provider, outcome,
          provider_message_id, claimed_by, at)
        SELECT id, 1, 'whatsapp', 'twilio', 'sent', 'SM' || id, 'bench', now() FROM upd;
      COMMIT;
    END LOOP;
  END LOOP;
END $$;

CREATE PROCEDURE run_no_history() LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    WITH due AS MATERIALIZED (
        SELECT id FROM messages WHERE channel = 'whatsapp' AND connection IS NULL
          AND status = 'pending' AND next_attempt_at <= now()
          AND (claimed_until IS NULL OR claimed_until <= now())
        ORDER BY next_attempt_at, id LIMIT 256 FOR UPDATE SKIP LOCKED
    ), cl AS (
        UPDATE messages m SET claimed_by = 'bench', claimed_until = now() + interval '5 minutes'
        FROM due WHERE m.id = due.id RETURNING m.id
    ) SELECT array_agg(id ORDER BY id) INTO ids FROM cl;
    COMMIT;
    EXIT WHEN ids IS NULL;
    FOR i IN 0..7 LOOP
      CONTINUE WHEN cardinality(ids[i * 32 + 1 : i * 32 + 32]) = 0;
      UPDATE messages m SET status = 'sent', attempts = 1, provider = 'twilio',
          provider_message_id = 'SM' || m.id, recipient = 'whatsapp:+6281234567890',
          body = m.body, sent_at = now(), claimed_by = NULL, claimed_until = NULL
      WHERE m.id = ANY (ids[i * 32 + 1 : i * 32 + 32])
        AND CASE WHEN m.claimed_by = 'bench' THEN m.status END = 'pending';
      COMMIT;
    END LOOP;
  END LOOP;
END $$;

CREATE PROCEDURE run_delete() LANGUAGE plpgsql AS $$
DECLARE ids bigint[];
BEGIN
  LOOP
    WITH due AS MATERIALIZED (
        SELECT id FROM messages WHERE channel = 'whatsapp' AND connection IS NULL
          AND status = 'pending' AND next_attempt_at <= now()
          AND (claimed_until IS NULL OR claimed_until <= now())
        ORDER BY next_attempt_at, id LIMIT 256 FOR UPDATE SKIP LOCKED
    ), cl AS (
        UPDATE messages m SET claimed_by = 'bench', claimed_until = now() + interval '5 minutes'
        FROM due WHERE m.id = due.id RETURNING m.id
    ) SELECT array_agg(id ORDER BY id) INTO ids FROM cl;
    COMMIT;
    EXIT WHEN ids IS NULL;
    FOR i IN 0..7 LOOP
      CONTINUE WHEN cardinality(ids[i * 32 + 1 : i * 32 + 32]) = 0;
      DELETE FROM messages m WHERE m.id = ANY (ids[i * 32 + 1 : i * 32 + 32])
        AND m.claimed_by = 'bench';
      COMMIT;
    END LOOP;
  END LOOP;
END $$;
