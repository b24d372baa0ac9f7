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

/// Where a lane sends: a channel and, for WhatsApp, one of its connections (`None` is the
/// default one). Rate limits, health and quotas are kept per route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub channel: ChannelKind,
    pub connection: Option<String>,
}

impl Route {
    /// A channel's default route.
    pub fn of(channel: ChannelKind) -> Self {
        Self { channel, connection: None }
    }

    /// A named WhatsApp connection.
    pub fn whatsapp(connection: &str) -> Self {
        Self { channel: ChannelKind::WhatsApp, connection: Some(connection.to_string()) }
    }

    /// The key its shared state is kept under: `whatsapp`, `whatsapp:gudang`.
    pub fn key(&self) -> String {
        match &self.connection {
            None => self.channel.as_str().to_string(),
            Some(c) => format!("{}:{c}", self.channel),
        }
    }
}

impl fmt::Display for Route {
    /// As people read it: `whatsapp`, `whatsapp gudang`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.connection {
            None => write!(f, "{}", self.channel),
            Some(c) => write!(f, "{} {c}", self.channel),
        }
    }
}

/// A channel preference as a person writes it (`schedule --channel`, an imported
/// `contacts.channels`): every name checked, normalized to `whatsapp+email,telegram`. An error
/// names the bad part and says how a preference is written.
pub fn parse_preference(raw: &str) -> Result<String, String> {
    let mut groups = Vec::new();
    for group in raw.split(',') {
        let mut names = Vec::new();
        for name in group.split('+') {
            let kind = name.parse::<ChannelKind>().map_err(|e| {
                format!(
                    "{e}; write whatsapp, telegram or email, + to send on several, and , for \
                     fallbacks (whatsapp+email,telegram)"
                )
            })?;
            names.push(kind.as_str());
        }
        groups.push(names.join("+"));
    }
    Ok(groups.join(","))
}

/// A channel preference (SPEC §10): `,` separates fallbacks, tried in order, and `+` joins
/// channels that all get the reminder. `whatsapp+email,telegram` sends on WhatsApp and email,
/// and falls back to Telegram for whichever of the two failed. Names that are not channels are
/// passed over here: generation reported them on the message.
pub fn groups(preference: &str) -> Vec<Vec<ChannelKind>> {
    preference
        .split(',')
        .map(|group| group.split('+').filter_map(|c| c.parse::<ChannelKind>().ok()).collect())
        .collect()
}

/// The channels that get the reminder first: the preference's first group.
pub fn first_group(preference: &str) -> Vec<ChannelKind> {
    groups(preference).into_iter().next().unwrap_or_default()
}

/// Where a reminder that failed on `current` goes next: the first channel of a later group than
/// the one `current` is in, if any.
pub fn next_channel(preference: Option<&str>, current: ChannelKind) -> Option<ChannelKind> {
    let groups = groups(preference.unwrap_or_default());
    let at = groups.iter().position(|g| g.contains(&current))?;
    groups.into_iter().skip(at + 1).flatten().find(|c| *c != current)
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
    fn a_preference_is_a_list_of_known_channels() {
        assert_eq!(parse_preference("whatsapp").as_deref(), Ok("whatsapp"));
        assert_eq!(
            parse_preference(" WhatsApp , email+Telegram ").as_deref(),
            Ok("whatsapp,email+telegram")
        );
        assert!(parse_preference("whatsapp,,email").unwrap_err().contains("empty channel name"));
        assert!(parse_preference("whatsapp,sms").unwrap_err().contains("unknown channel 'sms'"));
        assert!(parse_preference("whatsapp+").unwrap_err().contains("empty channel name"));
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

    #[test]
    fn plus_joins_channels_and_comma_falls_back() {
        use ChannelKind::{Email, Telegram, WhatsApp};
        assert_eq!(first_group("whatsapp+email,telegram"), vec![WhatsApp, Email]);
        assert_eq!(first_group(" WhatsApp + email\n"), vec![WhatsApp, Email]);
        assert_eq!(next_channel(Some("whatsapp+email,telegram"), WhatsApp), Some(Telegram));
        assert_eq!(next_channel(Some("whatsapp+email,telegram"), Email), Some(Telegram));
        assert_eq!(next_channel(Some("whatsapp+email,telegram"), Telegram), None);
        assert_eq!(next_channel(Some("email,whatsapp+telegram"), Email), Some(WhatsApp));
        assert!(first_group(",email").is_empty());
        assert_eq!(groups("sms,email"), vec![vec![], vec![Email]]);
    }
}
