//! fonnte WhatsApp gateway.
