//! The log channel: a stand-in for a real provider that writes each rendered message to the
//! `reminderctl::log_channel` tracing target and always succeeds. It lets a deployment (or a dry
//! run) exercise generation and delivery end to end without credentials or network access.

use async_trait::async_trait;

use super::{Channel, DeliveryError, OutboundMessage, Receipt};

/// Writes messages to the log instead of sending them.
pub struct LogChannel {
    channel: &'static str,
}

impl LogChannel {
    /// `channel` names the logical channel this stands in for (`whatsapp`, `telegram`, `email`),
    /// so log lines say where the message would have gone.
    pub fn new(channel: &'static str) -> Self {
        Self { channel }
    }

    /// The logical channel this stands in for.
    pub fn channel(&self) -> &'static str {
        self.channel
    }
}

#[async_trait]
impl Channel for LogChannel {
    fn provider(&self) -> &'static str {
        "log"
    }

    async fn send(&self, message: &OutboundMessage) -> Result<Receipt, DeliveryError> {
        tracing::info!(
            target: "reminderctl::log_channel",
            outbox_id = message.id,
            channel = self.channel,
            recipient = %message.recipient,
            subject = message.subject.as_deref().unwrap_or(""),
            media_url = message.media_url.as_deref().unwrap_or(""),
            body = %message.body,
            "delivered to the log (log provider; nothing left this machine)"
        );
        Ok(Receipt { provider_message_id: Some(format!("log-{}", message.id)) })
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes, so the test can read the log line back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn message() -> OutboundMessage {
        OutboundMessage {
            id: 314,
            recipient: "budi@example.com".to_owned(),
            subject: Some("Pengingat pembayaran".to_owned()),
            body: "Tagihan Rp 150.000 jatuh tempo 5 Mei".to_owned(),
            media_url: Some("https://example.com/invoice.pdf".to_owned()),
        }
    }

    /// Sends through a log channel with a capturing subscriber scoped to this thread.
    ///
    /// Every test that reaches the `send` callsite goes through here: tracing caches a callsite's
    /// interest globally, and a concurrent test without a subscriber could cache it as "never".
    async fn send_captured(channel: &'static str, message: &OutboundMessage) -> (Receipt, String) {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_target(true)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        let receipt =
            LogChannel::new(channel).send(message).await.expect("the log channel never fails");
        drop(guard);
        let text = String::from_utf8_lossy(&logs.0.lock().expect("log buffer")).into_owned();
        (receipt, text)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_rendered_message_is_logged_under_the_log_channel_target() {
        let (_, text) = send_captured("email", &message()).await;

        for expected in [
            "reminderctl::log_channel",
            "INFO",
            "outbox_id=314",
            "channel=\"email\"",
            "budi@example.com",
            "Pengingat pembayaran",
            "Tagihan Rp 150.000 jatuh tempo 5 Mei",
            "https://example.com/invoice.pdf",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_receipt_id_is_log_dash_outbox_id() {
        let (receipt, _) = send_captured("whatsapp", &message()).await;
        assert_eq!(receipt.provider_message_id.as_deref(), Some("log-314"));
    }

    #[test]
    fn the_provider_is_log_and_the_logical_channel_is_kept() {
        let channel = LogChannel::new("telegram");
        assert_eq!(channel.provider(), "log");
        assert_eq!(channel.channel(), "telegram");
    }
}
