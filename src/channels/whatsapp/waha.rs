//! waha WhatsApp gateway.
