-- Rows made by `test-dunning`: its own contact (a real customer with the same email is never
-- touched) and an invoice the rules never remind about.
ALTER TABLE contacts ADD COLUMN is_test BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE invoices ADD COLUMN is_test BOOLEAN NOT NULL DEFAULT false;
