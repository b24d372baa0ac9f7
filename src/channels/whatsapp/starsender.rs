//! starsender WhatsApp gateway.
