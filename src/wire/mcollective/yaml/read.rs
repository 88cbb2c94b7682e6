//! Reading one YAML document into [`Ruby`] values as Psych's `safe_load` would, from
//! yaml-rust2's events.

use base64::Engine as _;
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::TScalarStyle;

use super::plain::{Plain, resolve_plain};
use super::{MAX_DEPTH, MAX_VALUES};
use crate::wire::mcollective::{LegacyError, Ruby};

/// Reads one YAML document.
pub fn decode(bytes: &[u8]) -> Result<Ruby, LegacyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| LegacyError::yaml(0, e.to_string()))?;
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        values: 0,
        line: 0,
    };
    reader.expect(|e| matches!(e, Event::StreamStart), "a stream")?;
    reader.expect(|e| matches!(e, Event::DocumentStart), "a document")?;
    let first = reader.next()?;
    let value = reader.value(first, 0)?;
    reader.expect(
        |e| matches!(e, Event::DocumentEnd),
        "the end of the document",
    )?;
    reader.expect(|e| matches!(e, Event::StreamEnd), "one document only")?;
    Ok(value)
}

struct Reader<'a> {
    parser: Parser<std::str::Chars<'a>>,
    values: usize,
    line: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Result<Event, LegacyError> {
        let (event, mark) = self
            .parser
            .next_token()
            .map_err(|e| LegacyError::yaml(e.marker().line(), e.info().to_string()))?;
        self.line = mark.line();
        Ok(event)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, LegacyError> {
        Err(LegacyError::yaml(self.line, message))
    }

    fn expect(&mut self, want: impl Fn(&Event) -> bool, what: &str) -> Result<(), LegacyError> {
        let event = self.next()?;
        if want(&event) {
            Ok(())
        } else {
            self.fail(format!("expected {what}, found {event:?}"))
        }
    }

    fn value(&mut self, event: Event, depth: usize) -> Result<Ruby, LegacyError> {
        if depth > MAX_DEPTH {
            return self.fail(format!("nested deeper than {MAX_DEPTH}"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return self.fail(format!("more than {MAX_VALUES} values"));
        }
        match event {
            Event::Scalar(text, style, _, tag) => self.scalar(text, style, tag),
            Event::SequenceStart(_, tag) => {
                self.no_tag(tag.as_ref())?;
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => return Ok(Ruby::Array(items)),
                        event => items.push(self.value(event, depth + 1)?),
                    }
                }
            }
            Event::MappingStart(_, tag) => {
                self.no_tag(tag.as_ref())?;
                let mut pairs = Vec::new();
                loop {
                    let key = match self.next()? {
                        Event::MappingEnd => return Ok(Ruby::Hash(pairs)),
                        event => self.value(event, depth + 1)?,
                    };
                    let event = self.next()?;
                    let value = self.value(event, depth + 1)?;
                    pairs.push((key, value));
                }
            }
            Event::Alias(_) => self.fail("aliases are not allowed (Psych safe_load refuses them)"),
            other => self.fail(format!("unexpected {other:?}")),
        }
    }

    fn no_tag(&self, tag: Option<&Tag>) -> Result<(), LegacyError> {
        match tag {
            None => Ok(()),
            Some(tag) => self.fail(format!("tag {}{} is not allowed", tag.handle, tag.suffix)),
        }
    }

    fn scalar(
        &self,
        text: String,
        style: TScalarStyle,
        tag: Option<Tag>,
    ) -> Result<Ruby, LegacyError> {
        if let Some(tag) = tag {
            let name = format!("{}{}", tag.handle, tag.suffix);
            return match name.as_str() {
                "!ruby/symbol" | "!ruby/sym" => Ok(Ruby::Symbol(text)),
                "!binary" | "tag:yaml.org,2002:binary" => {
                    let compact: String = text.split_whitespace().collect();
                    base64::engine::general_purpose::STANDARD
                        .decode(compact)
                        .map(Ruby::Bytes)
                        .or_else(|e| self.fail(format!("!binary is not base64: {e}")))
                }
                "tag:yaml.org,2002:str" | "!str" => Ok(Ruby::Str(text)),
                _ => self.fail(format!("tag {name} is not allowed")),
            };
        }
        if style != TScalarStyle::Plain {
            return Ok(Ruby::Str(text));
        }
        match resolve_plain(&text) {
            Plain::Value(value) => Ok(value),
            Plain::Refused(why) => self.fail(why),
        }
    }
}
