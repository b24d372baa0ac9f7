//! The logical channels a reminder can travel on. A provider (Twilio, WAHA, SMTP, `log`, …)
//! carries one channel; the outbox, the rate limits and a contact's preference speak of channels.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A logical channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    WhatsApp,
    Telegram,
    Email,
}

impl ChannelKind {
    /// Every channel, in the order `status` and the summary list them.
    pub const ALL: [ChannelKind; 3] = [Self::WhatsApp, Self::Telegram, Self::Email];

    /// The name stored in the outbox (`whatsapp`, `telegram`, `email`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhatsApp => "whatsapp",
            Self::Telegram => "telegram",
            Self::Email => "email",
        }
    }

    /// Position in [`Self::ALL`], for arrays indexed by channel.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = String;

    /// Accepts the stored names in any letter case, with surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Self::ALL.into_iter().find(|c| c.as_str().eq_ignore_ascii_case(name)).ok_or_else(|| {
            if name.is_empty() {
                "an empty channel name".to_string()
            } else {
                format!("unknown channel '{name}' (known: whatsapp, telegram, email)")
            }
        })
    }
}

/// The channel after `current` in a contact's ordered preference (`whatsapp,email`), if any.
/// Names that are not channels are passed over: they were reported when the row was generated.
pub fn next_channel(preference: Option<&str>, current: ChannelKind) -> Option<ChannelKind> {
    let list: Vec<ChannelKind> = preference
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.parse::<ChannelKind>().ok())
        .collect();
    let at = list.iter().position(|c| *c == current)?;
    list.into_iter().skip(at + 1).find(|c| *c != current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_with_whitespace() {
        assert_eq!("WhatsApp".parse(), Ok(ChannelKind::WhatsApp));
        assert_eq!(" email\n".parse(), Ok(ChannelKind::Email));
        assert!("".parse::<ChannelKind>().unwrap_err().contains("empty"));
        assert!("sms".parse::<ChannelKind>().unwrap_err().contains("'sms'"));
        for c in ChannelKind::ALL {
            assert_eq!(c.as_str().parse(), Ok(c));
            assert_eq!(ChannelKind::ALL[c.index()], c);
        }
    }

    #[test]
    fn the_next_channel_follows_the_preference() {
        use ChannelKind::{Email, Telegram, WhatsApp};
        assert_eq!(next_channel(Some("whatsapp,email"), WhatsApp), Some(Email));
        assert_eq!(next_channel(Some("whatsapp, email"), Email), None);
        assert_eq!(next_channel(Some("whatsapp,sms,telegram"), WhatsApp), Some(Telegram));
        assert_eq!(next_channel(Some("email"), WhatsApp), None);
        assert_eq!(next_channel(None, WhatsApp), None);
        assert_eq!(next_channel(Some("whatsapp,whatsapp"), WhatsApp), None);
    }
}
