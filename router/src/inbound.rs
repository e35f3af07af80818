//! A message as every channel hands it to the pipeline, and small text helpers.

use chrono::{DateTime, Utc};
use clawdbot_api::gateway::SessionKey;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One incoming text message, whatever the channel. Serialised into `inbound_messages.payload`
/// so any replica can finish it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// Channel name (`telegram`, `whatsapp`, `discord`, `web`).
    pub channel: String,
    /// The platform's id of this message or update: the dedupe key.
    pub external_id: String,
    /// The platform's id of the sender (what `user_channel_connections` maps).
    pub sender_id: String,
    /// Kind of conversation for the session key (`dm`, `guild`, ...).
    pub conversation: String,
    /// Peer for the session key (the chat, or the channel in a guild).
    pub peer: String,
    pub text: String,
    /// Where replies go; its shape belongs to the channel.
    pub reply_to: Value,
    /// When the platform says the user sent it.
    pub sent_at: DateTime<Utc>,
    /// The sender's language as the platform reports it (Telegram's `language_code`), if it
    /// does: what the router tells them unasked is in it, until they choose on the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

impl Inbound {
    pub fn session_key(&self) -> SessionKey {
        SessionKey::new(&self.channel, &self.conversation, &self.peer)
    }
}

/// The language the router speaks (`en`, `ru`) that a platform's language tag (`ru`,
/// `en-US`, `pt_BR`) names, if any.
pub fn spoken_lang(tag: &str) -> Option<&'static str> {
    match tag.trim().to_ascii_lowercase().split(['-', '_']).next()? {
        "en" => Some("en"),
        "ru" => Some("ru"),
        _ => None,
    }
}

/// Splits `text` into parts of at most `max_chars` characters, preferring to break at a
/// paragraph, line or word boundary in the last fifth of a part.
pub fn split_message(text: &str, max_chars: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if rest.chars().count() <= max_chars {
            parts.push(rest.to_string());
            break;
        }
        // Byte offset of the char at max_chars.
        let hard = rest
            .char_indices()
            .nth(max_chars)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..hard];
        let floor = window
            .char_indices()
            .nth(max_chars * 4 / 5)
            .map(|(i, _)| i)
            .unwrap_or(0);
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .filter(|&i| i > floor)
                    .map(|i| i + sep.len())
            })
            .unwrap_or(hard);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        if !head.is_empty() {
            parts.push(head.to_string());
        }
        rest = tail.trim_start();
    }
    parts
}

/// A tokenizer-like estimate of the tokens in `text` for agents that report no usage:
/// BPE vocabularies give about one token per short word, one more per ~4 further characters
/// of a long word, and one per punctuation mark or symbol.
pub fn estimate_tokens(text: &str) -> u64 {
    let mut tokens = 0u64;
    for word in text.split_whitespace() {
        let mut letters = 0u64;
        for c in word.chars() {
            if c.is_alphanumeric() {
                letters += 1;
            } else {
                tokens += 1;
                if letters > 0 {
                    tokens += 1 + (letters - 1) / 4;
                    letters = 0;
                }
            }
        }
        if letters > 0 {
            tokens += 1 + (letters - 1) / 4;
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_language_tags_map_to_the_languages_spoken() {
        assert_eq!(spoken_lang("ru"), Some("ru"));
        assert_eq!(spoken_lang("en-US"), Some("en"));
        assert_eq!(spoken_lang("RU_ru"), Some("ru"));
        assert_eq!(spoken_lang("pt-BR"), None);
        assert_eq!(spoken_lang(""), None);
    }

    #[test]
    fn short_messages_are_not_split() {
        assert_eq!(split_message("hello", 4096), vec!["hello"]);
        assert!(split_message("   ", 10).is_empty());
    }

    #[test]
    fn long_messages_split_at_word_boundaries_within_the_limit() {
        let text = "word ".repeat(2000); // 10,000 chars
        let parts = split_message(&text, 4096);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 4096));
        assert!(
            parts
                .iter()
                .all(|p| p.ends_with("word") && p.starts_with("word"))
        );
        assert_eq!(parts.join(" "), text.trim());
    }

    #[test]
    fn text_without_spaces_is_cut_hard_on_char_boundaries() {
        let text = "é".repeat(5000);
        let parts = split_message(&text, 4096);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![4096, 904]
        );
    }

    #[test]
    fn token_estimates_are_plausible() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("hello world"), 4); // 5 letters -> 2 each
        assert_eq!(estimate_tokens("Hi, you!"), 4);
        let long = "the quick brown fox jumps over the lazy dog ".repeat(10);
        let n = estimate_tokens(&long);
        assert!((90..=150).contains(&n), "{n}");
    }
}
