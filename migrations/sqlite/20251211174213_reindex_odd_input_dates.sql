-- Input dates that SQL reads as written are now only text that starts with a real calendar date
-- followed by nothing but a naive time. The earlier expression let through offsets written
-- after a space ('2025-11-18 01:00:00 +07:00', '… Z'), which date() reads as their UTC date, and
-- impossible days ('2025-02-30'), which match no window and were never reported; those rows are
-- now read in Rust as local dates in REMINDER_TIMEZONE, or reported as unreadable. The
-- expressions must match `odd_date` in src/store/sqlite.rs exactly.
DROP INDEX invoices_odd_due;
DROP INDEX vehicles_odd_next;
DROP INDEX vehicles_odd_last;
CREATE INDEX invoices_odd_due ON invoices (id) WHERE status = 'unpaid' AND (due_date IS NOT NULL AND (typeof(due_date) <> 'text' OR date(due_date, '+0 days') IS NOT substr(due_date, 1, 10) OR substr(due_date, 11) GLOB '*[^0-9:. Tt]*'));
CREATE INDEX vehicles_odd_next ON vehicles (id) WHERE (next_visit_date IS NOT NULL AND (typeof(next_visit_date) <> 'text' OR date(next_visit_date, '+0 days') IS NOT substr(next_visit_date, 1, 10) OR substr(next_visit_date, 11) GLOB '*[^0-9:. Tt]*'));
CREATE INDEX vehicles_odd_last ON vehicles (id) WHERE next_visit_date IS NULL AND (last_visit_date IS NOT NULL AND (typeof(last_visit_date) <> 'text' OR date(last_visit_date, '+0 days') IS NOT substr(last_visit_date, 1, 10) OR substr(last_visit_date, 11) GLOB '*[^0-9:. Tt]*'));
