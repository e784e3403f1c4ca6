//! What counts as one emoji for a reaction: a plain function over code points, following the shapes of Unicode's
//! emoji sequences (UTS #51) without its data files. Accepted:
//!
//! * a pictograph, optionally followed by the emoji variation selector (U+FE0F) and a skin tone (U+1F3FB–1F3FF):
//!   `👍`, `❤️`, `👍🏽`;
//! * such pictographs joined by zero-width joiners (U+200D): `👩‍💻`, `❤️‍🔥`, `👨‍👩‍👧‍👦`;
//! * a flag: two regional indicators (`🇫🇷`); a subdivision flag: U+1F3F4, tag characters, U+E007F;
//! * a keycap: `0`–`9`, `#` or `*`, an optional U+FE0F, then U+20E3 (`1️⃣`);
//!
//! at most [`MAX_CODE_POINTS`] code points. "Pictograph" is a code point of the blocks emoji are drawn from (the
//! ranges of Unicode's Extended_Pictographic, taken whole where they are mostly emoji): some rarely used symbols of
//! those blocks pass too, while letters, digits, punctuation, two emoji and text around an emoji do not.

/// Longest reaction, in code points: room for the longest standard sequences (a family with skin tones is 11).
pub const MAX_CODE_POINTS: usize = 16;

const VS16: char = '\u{FE0F}';
const ZWJ: char = '\u{200D}';
const KEYCAP: char = '\u{20E3}';
const BLACK_FLAG: char = '\u{1F3F4}';
const CANCEL_TAG: char = '\u{E007F}';

/// Whether `s` is exactly one emoji (see the module's documentation).
pub fn is_one_emoji(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() || chars.len() > MAX_CODE_POINTS {
        return false;
    }
    is_flag(&chars) || is_keycap(&chars) || is_tag_sequence(&chars) || is_zwj_sequence(&chars)
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

fn is_tag(c: char) -> bool {
    ('\u{E0020}'..='\u{E007E}').contains(&c)
}

/// A code point emoji are drawn from (Extended_Pictographic's ranges, regional indicators and skin tones aside).
fn is_pictograph(c: char) -> bool {
    if is_regional_indicator(c) || is_skin_tone(c) {
        return false;
    }
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{2199}' | '\u{21A9}'..='\u{21AA}' | '\u{231A}'..='\u{231B}' | '\u{2328}'
        | '\u{2388}' | '\u{23CF}' | '\u{23E9}'..='\u{23F3}' | '\u{23F8}'..='\u{23FA}' | '\u{24C2}'
        | '\u{25AA}'..='\u{25AB}' | '\u{25B6}' | '\u{25C0}' | '\u{25FB}'..='\u{25FE}'
        | '\u{2600}'..='\u{27BF}' | '\u{2934}'..='\u{2935}' | '\u{2B05}'..='\u{2B07}'
        | '\u{2B1B}'..='\u{2B1C}' | '\u{2B50}' | '\u{2B55}' | '\u{3030}' | '\u{303D}' | '\u{3297}'
        | '\u{3299}' | '\u{1F000}'..='\u{1FAFF}' | '\u{1FC00}'..='\u{1FFFD}')
}

fn is_flag(chars: &[char]) -> bool {
    matches!(chars, [a, b] if is_regional_indicator(*a) && is_regional_indicator(*b))
}

fn is_keycap(chars: &[char]) -> bool {
    let base = |c: &char| c.is_ascii_digit() || matches!(c, '#' | '*');
    match chars {
        [b, k] => base(b) && *k == KEYCAP,
        [b, v, k] => base(b) && *v == VS16 && *k == KEYCAP,
        _ => false,
    }
}

fn is_tag_sequence(chars: &[char]) -> bool {
    match chars {
        [first, tags @ .., last] if *first == BLACK_FLAG && *last == CANCEL_TAG => {
            !tags.is_empty() && tags.iter().all(|c| is_tag(*c))
        }
        _ => false,
    }
}

/// Pictographs, each with an optional U+FE0F and skin tone, joined by U+200D.
fn is_zwj_sequence(chars: &[char]) -> bool {
    chars.split(|c| *c == ZWJ).all(|element| match element {
        [p] => is_pictograph(*p),
        [p, v] => is_pictograph(*p) && (*v == VS16 || is_skin_tone(*v)),
        [p, v, t] => is_pictograph(*p) && *v == VS16 && is_skin_tone(*t),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_emoji_of_every_shape_pass() {
        for ok in [
            "👍",
            "❤️",
            "❤",
            "👍🏽",
            "😂",
            "🎉",
            "👩‍💻",
            "❤️‍🔥",
            "👨‍👩‍👧‍👦",
            "👨🏻‍👩🏻‍👧🏻‍👦🏻",
            "🏳️‍⚧️",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}",
            "🫠",
            "©️",
            "⭐",
        ] {
            assert!(is_one_emoji(ok), "{ok:?} should be one emoji");
        }
    }

    #[test]
    fn text_and_several_emoji_fail() {
        for bad in [
            "",
            "a",
            "ok",
            "1",
            "#",
            ":+1:",
            "👍👍",
            "👍 ",
            " 👍",
            "a👍",
            "🇫",
            "🇫🇷🇩🇪",
            "\u{200D}",
            "👩\u{200D}",
            "\u{200D}👩",
            "👩\u{200D}\u{200D}💻",
            "\u{FE0F}",
            "🏽",
            "🏴\u{E007F}",
            "é",
            "\u{0}",
            "😀\u{0}",
        ] {
            assert!(!is_one_emoji(bad), "{bad:?} should not be one emoji");
        }
        let long = std::iter::repeat_n("👍", 9)
            .collect::<Vec<_>>()
            .join("\u{200D}");
        assert!(!is_one_emoji(&long), "17 code points is too long");
    }
}
