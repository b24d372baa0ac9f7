-- `reminderctl import` upserts rows by their key in the system they come from (`ref`). Rows an
-- app writes directly may leave it NULL: a unique index allows any number of NULLs.
ALTER TABLE contacts ADD COLUMN ref TEXT;
ALTER TABLE invoices ADD COLUMN ref TEXT;
ALTER TABLE vehicles ADD COLUMN ref TEXT;
ALTER TABLE scheduled_messages ADD COLUMN ref TEXT;
CREATE UNIQUE INDEX contacts_ref ON contacts (ref);
CREATE UNIQUE INDEX invoices_ref ON invoices (ref);
CREATE UNIQUE INDEX vehicles_ref ON vehicles (ref);
CREATE UNIQUE INDEX scheduled_messages_ref ON scheduled_messages (ref);
