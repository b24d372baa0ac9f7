-- Rows made by `test-dunning`: its own contact (a real customer with the same email is never
-- touched) and an invoice the rules never remind about.
ALTER TABLE contacts ADD COLUMN is_test INTEGER NOT NULL DEFAULT 0;
ALTER TABLE invoices ADD COLUMN is_test INTEGER NOT NULL DEFAULT 0;
