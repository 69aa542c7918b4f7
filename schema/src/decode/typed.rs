//! Typed values of a read node's settings: strings, integers, sizes, numbers,
//! percentages and booleans, each with the site it was given at; a value of the wrong
//! type or out of range is reported and read as absent.

use kdl::KdlValue;

use super::reader::{type_of, NodeReader};
use crate::diagnostics::SchemaError;
use crate::spans::Site;
use crate::units::{parse_percent, parse_size, SizeError};

impl<'a> NodeReader<'a, '_> {
    /// Reports a problem at `site`.
    pub fn report(&mut self, site: Site, error: SchemaError) {
        self.errors.push((site.file, error));
    }

    fn wrong(&mut self, field: &'static str, expected: &'static str, value: &KdlValue, at: Site) {
        let error = SchemaError::wrong_type(field, expected, type_of(value), at.span);
        self.report(at, error);
    }

    /// A string setting.
    pub fn text(&mut self, name: &'static str) -> Option<(&'a str, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        match value {
            KdlValue::String(s) => Some((s.as_str(), at)),
            other => {
                self.wrong(name, "a string", other, at);
                None
            }
        }
    }

    /// A string setting, owned.
    pub fn string(&mut self, name: &'static str) -> Option<String> {
        self.text(name).map(|(s, _)| s.to_owned())
    }

    /// Every string of a repeated setting.
    pub fn texts(&mut self, name: &'static str) -> Vec<(&'a str, Site)> {
        let mut out = Vec::new();
        for (value, at) in self.values(name) {
            match value {
                KdlValue::String(s) => out.push((s.as_str(), at)),
                other => self.wrong(name, "a string", other, at),
            }
        }
        out
    }

    /// An integer setting that fits `T`.
    pub fn integer<T: TryFrom<i128> + Copy + ToString + Bounded>(
        &mut self,
        name: &'static str,
    ) -> Option<(T, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        let Some(i) = value.as_integer() else {
            self.wrong(name, "an integer", value, at);
            return None;
        };
        self.fit(name, i, at)
    }

    fn fit<T: TryFrom<i128> + Copy + ToString + Bounded>(
        &mut self,
        name: &'static str,
        i: i128,
        at: Site,
    ) -> Option<(T, Site)> {
        match T::try_from(i) {
            Ok(v) => Some((v, at)),
            Err(_) if i < 0 => {
                let error = SchemaError::TooSmall {
                    field: name,
                    min: "0".to_owned(),
                    found: i.to_string(),
                    span: at.span,
                    help: "negative values have no meaning here",
                };
                self.report(at, error);
                None
            }
            Err(_) => {
                let error = SchemaError::NumberTooLarge {
                    field: name,
                    found: i.to_string(),
                    max: T::MAX_TEXT.to_owned(),
                    span: at.span,
                };
                self.report(at, error);
                None
            }
        }
    }

    /// A size setting: a string with a binary unit, or an integer of bytes.
    pub fn size(&mut self, name: &'static str) -> Option<(u64, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        let s = match value {
            KdlValue::Integer(i) => return self.fit(name, *i, at),
            KdlValue::String(s) => s,
            other => {
                self.wrong(name, "a size such as \"512MiB\"", other, at);
                return None;
            }
        };
        let error = match parse_size(s) {
            Ok(bytes) => return Some((bytes, at)),
            Err(SizeError::TooLarge) => SchemaError::NumberTooLarge {
                field: name,
                found: s.clone(),
                max: "16EiB - 1".to_owned(),
                span: at.span,
            },
            Err(e) => {
                let help = match e {
                    SizeError::DecimalUnit { suggestion } => {
                        format!("sizes use binary units: did you mean `{suggestion}`?")
                    }
                    _ => "write a whole number and a binary unit: `512MiB`, `4GiB`, `4G` (= GiB), `16KiB`, or bytes".to_owned(),
                };
                SchemaError::InvalidSize {
                    found: s.clone(),
                    span: at.span,
                    help,
                }
            }
        };
        self.report(at, error);
        None
    }

    /// A number setting (integer or decimal), finite.
    pub fn number(&mut self, name: &'static str) -> Option<(f64, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        let number = match value {
            KdlValue::Integer(i) => *i as f64,
            KdlValue::Float(f) => *f,
            other => {
                self.wrong(name, "a number", other, at);
                return None;
            }
        };
        Some((number, at))
    }

    /// A fraction given as `"8%"` or `0.08`.
    pub fn percent(&mut self, name: &'static str) -> Option<(f64, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        let fraction = match value {
            KdlValue::String(s) => parse_percent(s),
            KdlValue::Float(f) if (0.0..1.0).contains(f) => Some(*f),
            KdlValue::Integer(0) => Some(0.0),
            KdlValue::Float(_) | KdlValue::Integer(_) => None,
            other => {
                self.wrong(name, "a percentage such as \"8%\"", other, at);
                return None;
            }
        };
        if fraction.is_none() {
            let error = SchemaError::InvalidValue {
                field: name,
                found: value.to_string(),
                span: at.span,
                reason: "not a percentage in 0%..100%".to_owned(),
                help: "write a percentage such as \"8%\" (or a fraction such as 0.08)",
            };
            self.report(at, error);
        }
        fraction.map(|f| (f, at))
    }

    /// A boolean setting.
    pub fn boolean(&mut self, name: &'static str) -> Option<(bool, Site)> {
        let (value, at) = self.values(name).into_iter().next()?;
        match value {
            KdlValue::Bool(b) => Some((*b, at)),
            other => {
                self.wrong(name, crate::diagnostics::BOOLEAN, other, at);
                None
            }
        }
    }
}

/// The largest value of an integer type, for "too large" messages.
pub trait Bounded {
    const MAX_TEXT: &'static str;
}

impl Bounded for u16 {
    const MAX_TEXT: &'static str = "65535";
}

impl Bounded for u32 {
    const MAX_TEXT: &'static str = "4294967295";
}

impl Bounded for u64 {
    const MAX_TEXT: &'static str = "18446744073709551615";
}
