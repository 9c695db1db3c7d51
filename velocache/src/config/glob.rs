//! Globs as the configuration, rules and admin API write them (`*.example.org`, `/v2/*`),
//! compiled once when a file or request is read and matched on every flow after that.
//!
//! The syntax and its translation to a regular expression are globset's; the matcher is a
//! `regex-automata` meta regex with the full-DFA strategy turned off. Why: `tracing-subscriber`
//! turns on regex-automata's `dfa-build` feature for the whole binary, and with it every glob
//! was determinised up front (~100 µs each, most of a rules reload and 3/4 of a config fuzz
//! execution). The lazy DFA the meta regex uses instead is as fast on host names and paths.
use globset::GlobBuilder;
use regex_automata::meta::{Config, Regex};
use regex_automata::util::syntax;

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    re: Regex,
}

impl Glob {
    /// Compile what `builder` describes; the error names the glob and why it is refused.
    pub fn compile(builder: &GlobBuilder<'_>) -> Result<Glob, String> {
        let glob = builder.build().map_err(|e| e.to_string())?;
        // As globset's own matcher: bytes semantics (its pattern says `(?-u)`), `*` across
        // newlines.
        let re = Regex::builder()
            .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
            .configure(Config::new().dfa(false).utf8_empty(false))
            .build(glob.regex())
            .map_err(|e| format!("glob `{}`: {e}", glob.glob()))?;
        Ok(Glob { re })
    }

    /// Whether all of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.re.is_match(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str, case_insensitive: bool) -> Glob {
        Glob::compile(
            GlobBuilder::new(text)
                .case_insensitive(case_insensitive)
                .literal_separator(false),
        )
        .unwrap()
    }

    #[test]
    fn a_glob_matches_the_whole_text_as_globset_does() {
        let g = glob("*.example.org", true);
        assert!(g.is_match("a.b.EXAMPLE.org"));
        assert!(!g.is_match("example.org"));
        assert!(!g.is_match("a.example.org.evil"));
        let p = glob("/v2/*/blobs/*", false);
        assert!(p.is_match("/v2/library/alpine/blobs/sha256:ab"));
        assert!(!p.is_match("/V2/x/blobs/y"));
        assert!(glob("cdn?.example.*", true).is_match("cdn1.example.net"));
        assert!(glob("[ab].x", false).is_match("b.x"));
    }

    #[test]
    fn a_bad_glob_is_refused_with_a_reason() {
        let err = Glob::compile(&GlobBuilder::new("a[b")).unwrap_err();
        assert!(!err.is_empty());
    }
}
