-- invoices.due_date is NOT NULL, so SQLite (3.46, the version built in) drops a query's
-- `due_date IS NOT NULL` as always true, and then no longer finds the query's WHERE implying
-- this index's: every `generate` read all unpaid invoices to find the odd dates. Without the
-- term on either side the index is used again. The expression must match
-- `odd_date_value("due_date")` in src/store/sqlite.rs exactly.
DROP INDEX invoices_odd_due;
CREATE INDEX invoices_odd_due ON invoices (id) WHERE status = 'unpaid' AND (typeof(due_date) <> 'text' OR date(due_date, '+0 days') IS NOT substr(due_date, 1, 10) OR substr(due_date, 11) GLOB '*[^0-9:. Tt]*');
