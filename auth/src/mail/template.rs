//! The subset of Go's `html/template` that Supabase email templates use, parsed once and
//! rendered per message.
//!
//! Owns: the template syntax tree, the HTML context of every action, the escapers.
//!
//! Supported:
//! - Fields: `{{ .ConfirmationURL }}`, `{{ .Token }}`, `{{ .TokenHash }}`, `{{ .SiteURL }}`,
//!   `{{ .RedirectTo }}`, `{{ .Email }}`, `{{ .NewEmail }}`, `{{ .SendingTo }}` (the address this
//!   copy goes to), `{{ .Data }}` and `{{ .Data.key.sub }}` (the user's metadata), spaced or not
//!   (`{{.Token}}`). Another name renders empty, as a missing map key does in GoTrue (the load
//!   warns about it: it is likely a typo).
//! - Trim markers `{{- … -}}` and comments `{{/* … */}}`.
//! - `{{ if X }}…{{ else if Y }}…{{ else }}…{{ end }}` where a condition is a field, a string
//!   literal, or `not`, `eq`, `ne`, `and`, `or` applied to those (parentheses nest). Truthiness is
//!   Go's: empty string, `false`, 0, null, missing, empty list or map are false.
//!
//! Not supported (a load error naming the action): `range`, `with`, `define`, `template`,
//! `block`, variables (`$x`), pipes (`|`), other functions, number and boolean literals, actions
//! inside `<script>`, `<style>`, `style=`, `srcset=` or `on…=` event attributes, or in a tag
//! outside an attribute value.
//!
//! Escaping follows html/template's contexts: in text and in ordinary attribute values a value is
//! HTML-escaped (`& < > " ' +` and NUL, as Go's `htmlEscaper`); in a URL attribute (`href`, `src`,
//! …) a value at the start of the URL is filtered (a scheme other than http, https or mailto
//! becomes `#ZgotmplZ`) and normalised, one before `?`/`#` is normalised, one after is
//! query-escaped, then each is HTML-escaped; in an unquoted attribute value spaces and `=`
//! are escaped too; inside an HTML comment a value renders empty. HTML comments in the template
//! text are removed, as Go does.
//!
//! Values print as Go's `fmt` prints a decoded JSON value: strings as they are, numbers as
//! `float64` (`%v`: `30`, `1.5`, `1e+06`), `true`/`false`, null or missing as nothing, lists as
//! `[a b]`, maps as `map[k:v]` with sorted keys.
//!
//! Invariants: a parsed [`Template`] renders without error for any data (every context was
//! decided at load; missing data renders empty); rendering never reads the file system.

use std::fmt::Write as _;

use serde_json::Value as Json;

use super::MailVars;

/// A parsed template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    /// Literal text, already stripped of HTML comments.
    Text(String),
    /// An action printing a value, with the escaping its HTML context calls for.
    Print(Expr, Escape),
    /// `if` chains: the first true condition's branch, else `otherwise`.
    If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Field(Field),
    Str(String),
    Not(Box<Expr>),
    Eq(Box<Expr>, Vec<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    ConfirmationUrl,
    Token,
    TokenHash,
    SiteUrl,
    RedirectTo,
    Email,
    NewEmail,
    SendingTo,
    /// `.Data` followed by keys.
    Data(Vec<String>),
    /// A name GoTrue does not pass: renders empty.
    Unknown(String),
}

/// What a printed value goes through, decided by its HTML context.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Escape {
    /// Text, RCDATA, or a quoted ordinary attribute value.
    Html,
    /// An unquoted ordinary attribute value.
    HtmlNoSpace,
    /// A URL attribute value: the URL escaper, then the HTML one for the quoting.
    Url(UrlPart, bool /* quoted */),
    /// Inside an HTML comment: nothing is printed.
    Elide,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UrlPart {
    /// Nothing of the URL yet: filter the scheme, then normalise.
    Start,
    /// Before `?` or `#`: normalise.
    PreQuery,
    /// After `?` or `#`: escape.
    QueryOrFrag,
}

/// The data one message is rendered with.
pub(crate) struct Data<'a> {
    pub vars: &'a MailVars,
    pub sending_to: &'a str,
}

/// A value during evaluation.
enum Val<'a> {
    Str(&'a str),
    Json(&'a Json),
    Bool(bool),
    Missing,
}

impl Template {
    /// Parses `src`; `name` only labels errors and warnings.
    pub(crate) fn parse(name: &str, src: &str) -> Result<Template, String> {
        let tokens = lex(src).map_err(|e| format!("{name}: {e}"))?;
        let mut p = Parser { tokens, pos: 0 };
        let (nodes, end) = p.nodes().map_err(|e| format!("{name}: {e}"))?;
        if let Some(end) = end {
            return Err(format!("{name}: unexpected {{{{ {end} }}}}"));
        }
        let mut nodes = nodes;
        annotate(&mut nodes, Ctx::Text).map_err(|e| format!("{name}: {e}"))?;
        for f in unknown_fields(&nodes) {
            tracing::warn!(template = name, field = %f, "email template uses a field GoTrue does not pass; it renders empty");
        }
        Ok(Template { nodes })
    }

    /// Renders with `data`.
    pub(crate) fn render(&self, data: &Data<'_>) -> String {
        let mut out = String::new();
        render_nodes(&self.nodes, data, &mut out);
        out
    }
}

fn unknown_fields(nodes: &[Node]) -> Vec<String> {
    fn expr(e: &Expr, out: &mut Vec<String>) {
        match e {
            Expr::Field(Field::Unknown(n)) => out.push(n.clone()),
            Expr::Field(_) | Expr::Str(_) => {}
            Expr::Not(a) => expr(a, out),
            Expr::Eq(a, rest) => {
                expr(a, out);
                rest.iter().for_each(|r| expr(r, out));
            }
            Expr::Ne(a, b) => {
                expr(a, out);
                expr(b, out);
            }
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|r| expr(r, out)),
        }
    }
    fn walk(nodes: &[Node], out: &mut Vec<String>) {
        for n in nodes {
            match n {
                Node::Text(_) => {}
                Node::Print(e, _) => expr(e, out),
                Node::If(branches, otherwise) => {
                    for (c, b) in branches {
                        expr(c, out);
                        walk(b, out);
                    }
                    walk(otherwise, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(nodes, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Lexing: text and actions, with trim markers applied.

#[derive(Debug)]
enum Tok {
    Text(String),
    /// The inside of `{{ … }}`, trimmed, without trim markers; `None` for a comment.
    Action(Option<String>),
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    loop {
        let Some(open) = rest.find("{{") else {
            let mut text = rest;
            if trim_next {
                text = text.trim_start();
            }
            if !text.is_empty() {
                toks.push(Tok::Text(text.to_owned()));
            }
            return Ok(toks);
        };
        let mut text = &rest[..open];
        let after = &rest[open + 2..];
        // `{{- ` trims the whitespace before it (the dash must be followed by a space).
        let trim_left = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_next {
            text = text.trim_start();
        }
        if trim_left {
            text = text.trim_end();
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text.to_owned()));
        }
        let inner_start = if trim_left { 1 } else { 0 };
        let Some(close) = find_close(&after[inner_start..]) else {
            return Err("unclosed action (missing }})".to_owned());
        };
        let mut inner = &after[inner_start..inner_start + close];
        rest = &after[inner_start + close + 2..];
        trim_next = false;
        if inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-") {
            trim_next = true;
            inner = &inner[..inner.len() - 1];
        }
        let inner = inner.trim();
        if inner.starts_with("/*") {
            if !inner.ends_with("*/") || inner.len() < 4 {
                return Err("unclosed comment (missing */)".to_owned());
            }
            toks.push(Tok::Action(None));
        } else {
            if inner.is_empty() {
                return Err("empty action {{ }}".to_owned());
            }
            toks.push(Tok::Action(Some(inner.to_owned())));
        }
    }
}

/// Where the action's `}}` is, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Parsing: the node tree and the expressions of actions.

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

/// How a list of nodes ended: at the end of input (`None`), or at `else`, `else if …`, `end`.
enum Stop {
    Else,
    ElseIf(Expr),
    End,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Else => f.write_str("else"),
            Stop::ElseIf(_) => f.write_str("else if"),
            Stop::End => f.write_str("end"),
        }
    }
}

impl Parser {
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<Stop>), String> {
        let mut nodes = Vec::new();
        while self.pos < self.tokens.len() {
            let tok = std::mem::replace(&mut self.tokens[self.pos], Tok::Action(None));
            self.pos += 1;
            match tok {
                Tok::Text(t) => nodes.push(Node::Text(t)),
                Tok::Action(None) => {}
                Tok::Action(Some(a)) => {
                    let words = split_keyword(&a);
                    match words {
                        ("end", "") => return Ok((nodes, Some(Stop::End))),
                        ("else", "") => return Ok((nodes, Some(Stop::Else))),
                        ("else", rest) => match split_keyword(rest) {
                            ("if", cond) if !cond.is_empty() => {
                                return Ok((nodes, Some(Stop::ElseIf(parse_expr(cond)?))))
                            }
                            _ => return Err(format!("unsupported action {{{{ {a} }}}}")),
                        },
                        ("if", cond) if !cond.is_empty() => nodes.push(self.if_chain(parse_expr(cond)?)?),
                        ("range" | "with" | "define" | "template" | "block" | "break" | "continue" | "if", _) => {
                            return Err(format!("unsupported action {{{{ {a} }}}} (supported: fields, if/else/end)"))
                        }
                        _ => nodes.push(Node::Print(parse_expr(&a)?, Escape::Html)),
                    }
                }
            }
        }
        Ok((nodes, None))
    }

    fn if_chain(&mut self, first: Expr) -> Result<Node, String> {
        let mut branches = Vec::new();
        let mut cond = first;
        loop {
            let (body, end) = self.nodes()?;
            match end {
                None => return Err("{{ if }} without {{ end }}".to_owned()),
                Some(Stop::End) => {
                    branches.push((cond, body));
                    return Ok(Node::If(branches, Vec::new()));
                }
                Some(Stop::ElseIf(next)) => {
                    branches.push((cond, body));
                    cond = next;
                }
                Some(Stop::Else) => {
                    branches.push((cond, body));
                    let (otherwise, end) = self.nodes()?;
                    return match end {
                        Some(Stop::End) => Ok(Node::If(branches, otherwise)),
                        None => Err("{{ if }} without {{ end }}".to_owned()),
                        Some(other) => Err(format!("unexpected {{{{ {other} }}}} after {{{{ else }}}}")),
                    };
                }
            }
        }
    }
}

/// Splits off the first word when it is a keyword-like identifier.
fn split_keyword(s: &str) -> (&str, &str) {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(s.len());
    if end == 0 {
        return ("", s);
    }
    (&s[..end], s[end..].trim())
}

/// Expression tokens.
#[derive(Debug, Clone, PartialEq)]
enum ETok {
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Open,
    Close,
}

fn parse_expr(src: &str) -> Result<Expr, String> {
    let toks = lex_expr(src)?;
    let mut pos = 0;
    let e = parse_command(&toks, &mut pos, src)?;
    if pos != toks.len() {
        return Err(format!("unexpected {:?} in {{{{ {src} }}}}", toks[pos]));
    }
    Ok(e)
}

fn lex_expr(src: &str) -> Result<Vec<ETok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(ETok::Open);
                i += 1;
            }
            ')' => {
                out.push(ETok::Close);
                i += 1;
            }
            '.' => {
                let mut path = Vec::new();
                while i < chars.len() && chars[i] == '.' {
                    i += 1;
                    let start = i;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    if start == i {
                        if path.is_empty() && (i >= chars.len() || chars[i].is_whitespace() || chars[i] == ')') {
                            return Err(format!("{{{{ . }}}} (the whole data) is not supported in {{{{ {src} }}}}"));
                        }
                        return Err(format!("bad field name in {{{{ {src} }}}}"));
                    }
                    path.push(chars[start..i].iter().collect());
                }
                out.push(ETok::Field(path));
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string in {{{{ {src} }}}}")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let esc =
                                chars.get(i + 1).ok_or_else(|| format!("unterminated string in {{{{ {src} }}}}"))?;
                            s.push(match esc {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                other => return Err(format!("unsupported escape \\{other} in {{{{ {src} }}}}")),
                            });
                            i += 2;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                out.push(ETok::Str(s));
            }
            '`' => {
                let start = i + 1;
                let Some(len) = chars[start..].iter().position(|&ch| ch == '`') else {
                    return Err(format!("unterminated raw string in {{{{ {src} }}}}"));
                };
                out.push(ETok::Str(chars[start..start + len].iter().collect()));
                i = start + len + 1;
            }
            '$' => return Err(format!("template variables are not supported: {{{{ {src} }}}}")),
            '|' => return Err(format!("pipelines are not supported: {{{{ {src} }}}}")),
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(ETok::Ident(chars[start..i].iter().collect()));
            }
            other => {
                return Err(format!("unsupported {other:?} in {{{{ {src} }}}} (number literals are not supported)"))
            }
        }
    }
    if out.is_empty() {
        return Err("empty action".to_owned());
    }
    Ok(out)
}

/// A command: a function applied to arguments, or a single operand.
fn parse_command(toks: &[ETok], pos: &mut usize, src: &str) -> Result<Expr, String> {
    match toks.get(*pos) {
        Some(ETok::Ident(name)) => {
            *pos += 1;
            let mut args = Vec::new();
            while let Some(t) = toks.get(*pos) {
                if *t == ETok::Close {
                    break;
                }
                args.push(parse_operand(toks, pos, src)?);
            }
            let arity = |n: usize, exact: bool| {
                if (exact && args.len() != n) || (!exact && args.len() < n) {
                    Err(format!(
                        "{name} takes {}{n} arguments in {{{{ {src} }}}}",
                        if exact { "" } else { "at least " }
                    ))
                } else {
                    Ok(())
                }
            };
            match name.as_str() {
                "not" => {
                    arity(1, true)?;
                    Ok(Expr::Not(Box::new(args.remove(0))))
                }
                "eq" => {
                    arity(2, false)?;
                    let first = args.remove(0);
                    Ok(Expr::Eq(Box::new(first), args))
                }
                "ne" => {
                    arity(2, true)?;
                    let b = args.pop().expect("two");
                    let a = args.pop().expect("two");
                    Ok(Expr::Ne(Box::new(a), Box::new(b)))
                }
                "and" => {
                    arity(1, false)?;
                    Ok(Expr::And(args))
                }
                "or" => {
                    arity(1, false)?;
                    Ok(Expr::Or(args))
                }
                "true" | "false" | "nil" => Err(format!("{name} literals are not supported in {{{{ {src} }}}}")),
                _ => Err(format!("unsupported function {name} in {{{{ {src} }}}} (supported: not, eq, ne, and, or)")),
            }
        }
        _ => {
            let e = parse_operand(toks, pos, src)?;
            if let Some(t) = toks.get(*pos) {
                if *t != ETok::Close {
                    return Err(format!("unexpected {t:?} after an operand in {{{{ {src} }}}}"));
                }
            }
            Ok(e)
        }
    }
}

fn parse_operand(toks: &[ETok], pos: &mut usize, src: &str) -> Result<Expr, String> {
    let t = toks.get(*pos).ok_or_else(|| format!("missing operand in {{{{ {src} }}}}"))?;
    *pos += 1;
    match t {
        ETok::Field(path) => Ok(Expr::Field(field(path))),
        ETok::Str(s) => Ok(Expr::Str(s.clone())),
        ETok::Open => {
            let e = parse_command(toks, pos, src)?;
            if toks.get(*pos) != Some(&ETok::Close) {
                return Err(format!("missing ) in {{{{ {src} }}}}"));
            }
            *pos += 1;
            Ok(e)
        }
        ETok::Close => Err(format!("unexpected ) in {{{{ {src} }}}}")),
        ETok::Ident(name) => {
            Err(format!("a function ({name}) must be parenthesised as an argument in {{{{ {src} }}}}"))
        }
    }
}

fn field(path: &[String]) -> Field {
    let (first, rest) = (path[0].as_str(), &path[1..]);
    let plain = |f: Field| if rest.is_empty() { f } else { Field::Unknown(path.join(".")) };
    match first {
        "ConfirmationURL" => plain(Field::ConfirmationUrl),
        "Token" => plain(Field::Token),
        "TokenHash" => plain(Field::TokenHash),
        "SiteURL" => plain(Field::SiteUrl),
        "RedirectTo" => plain(Field::RedirectTo),
        "Email" => plain(Field::Email),
        "NewEmail" => plain(Field::NewEmail),
        "SendingTo" => plain(Field::SendingTo),
        "Data" => Field::Data(rest.to_vec()),
        _ => Field::Unknown(path.join(".")),
    }
}

// ---------------------------------------------------------------------------------------------
// HTML contexts: which escaper each action gets, and the comments removed from the text.

/// The HTML context at a point of the template (a small subset of html/template's).
#[derive(Debug, Clone, PartialEq)]
enum Ctx {
    Text,
    /// Inside `<!-- … -->`.
    Comment,
    /// Inside the raw text of `<script>` or `<style>` (the element's name).
    RawText(&'static str),
    /// Inside a tag, between attributes (`script`/`style` tags remember their kind).
    Tag(TagKind),
    /// After an attribute name, before `=` or the next attribute.
    AfterAttrName(TagKind, AttrKind),
    /// After `=`, before the value.
    BeforeValue(TagKind, AttrKind),
    /// Inside an attribute value; `quote` is `None` for an unquoted value.
    Value {
        tag: TagKind,
        attr: AttrKind,
        quote: Option<char>,
        url: Option<UrlPart>,
    },
    /// Inside a URL attribute value whose part differs between `if` branches.
    UrlAmbiguous,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TagKind {
    Plain,
    Script,
    Style,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AttrKind {
    Plain,
    Url,
    /// `style`, `srcset`, `on…`: no action may go there.
    Unsupported,
}

fn attr_kind(name: &str) -> AttrKind {
    let name = name.to_ascii_lowercase();
    let name = name.strip_prefix("data-").unwrap_or(&name);
    let name = name.rsplit(':').next().unwrap_or(name);
    match name {
        "action" | "archive" | "background" | "cite" | "classid" | "codebase" | "data" | "formaction" | "href"
        | "icon" | "longdesc" | "manifest" | "poster" | "profile" | "src" | "usemap" | "xmlns" => AttrKind::Url,
        "style" | "srcset" => AttrKind::Unsupported,
        n if n.starts_with("on") => AttrKind::Unsupported,
        n if n.contains("src") || n.contains("uri") || n.contains("url") => AttrKind::Url,
        _ => AttrKind::Plain,
    }
}

/// Decides every action's escaper and strips comments from the text, walking the tree from `ctx`;
/// returns the context at the end.
fn annotate(nodes: &mut [Node], mut ctx: Ctx) -> Result<Ctx, String> {
    for node in nodes.iter_mut() {
        match node {
            Node::Text(t) => {
                let (out, next) = scan(t, ctx);
                *t = out;
                ctx = next;
            }
            Node::Print(e, esc) => {
                // Go's `nudge`: an action right after `=` starts an unquoted value.
                if let Ctx::BeforeValue(tag, attr) = ctx {
                    let url = (attr == AttrKind::Url).then_some(UrlPart::Start);
                    ctx = Ctx::Value { tag, attr, quote: None, url };
                }
                *esc = match &ctx {
                    Ctx::Text => Escape::Html,
                    Ctx::Comment => Escape::Elide,
                    Ctx::RawText(el) => return Err(format!("{{{{ {} }}}} inside <{el}> is not supported", show(e))),
                    Ctx::Tag(_) | Ctx::AfterAttrName(..) | Ctx::BeforeValue(..) => {
                        return Err(format!(
                            "{{{{ {} }}}} inside a tag outside an attribute value is not supported",
                            show(e)
                        ))
                    }
                    Ctx::UrlAmbiguous => {
                        return Err(format!("{{{{ {} }}}} appears in an ambiguous context within a URL", show(e)))
                    }
                    Ctx::Value { attr: AttrKind::Unsupported, .. } => {
                        return Err(format!(
                            "{{{{ {} }}}} inside a style, srcset or event-handler attribute is not supported",
                            show(e)
                        ))
                    }
                    Ctx::Value { attr: AttrKind::Plain, quote, .. } => {
                        if quote.is_some() {
                            Escape::Html
                        } else {
                            Escape::HtmlNoSpace
                        }
                    }
                    Ctx::Value { attr: AttrKind::Url, quote, url, .. } => {
                        Escape::Url(url.unwrap_or(UrlPart::Start), quote.is_some())
                    }
                };
                // An action printing a value into an unquoted value or a URL keeps the context (as
                // in Go: only literal text moves the URL part along).
            }
            Node::If(branches, otherwise) => {
                let start = ctx.clone();
                let mut end: Option<Ctx> = None;
                for (_, body) in branches.iter_mut() {
                    let c = annotate(body, start.clone())?;
                    end = Some(match end {
                        None => c,
                        Some(prev) => join(prev, c)?,
                    });
                }
                let c = annotate(otherwise, start)?;
                ctx = join(end.expect("an if has a branch"), c)?;
            }
        }
    }
    Ok(ctx)
}

fn join(a: Ctx, b: Ctx) -> Result<Ctx, String> {
    if a == b {
        return Ok(a);
    }
    match (&a, &b) {
        (
            Ctx::Value { tag: t1, attr: AttrKind::Url, quote: q1, .. },
            Ctx::Value { tag: t2, attr: AttrKind::Url, quote: q2, .. },
        ) if t1 == t2 && q1 == q2 => Ok(Ctx::UrlAmbiguous),
        (Ctx::UrlAmbiguous, Ctx::Value { attr: AttrKind::Url, .. })
        | (Ctx::Value { attr: AttrKind::Url, .. }, Ctx::UrlAmbiguous) => Ok(Ctx::UrlAmbiguous),
        _ => Err("{{ if }} branches end in different HTML contexts".to_owned()),
    }
}

fn show(e: &Expr) -> String {
    match e {
        Expr::Field(Field::Data(p)) if p.is_empty() => ".Data".to_owned(),
        Expr::Field(Field::Data(p)) => format!(".Data.{}", p.join(".")),
        Expr::Field(Field::Unknown(n)) => format!(".{n}"),
        Expr::Field(f) => format!(".{f:?}"),
        Expr::Str(s) => format!("{s:?}"),
        _ => "…".to_owned(),
    }
}

/// Moves `ctx` over the literal `text`, returning the text to emit (comments removed) and the
/// context after it.
fn scan(text: &str, mut ctx: Ctx) -> (String, Ctx) {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        match ctx.clone() {
            Ctx::Text => match rest.find('<') {
                None => {
                    out.push_str(rest);
                    rest = "";
                }
                Some(i) => {
                    out.push_str(&rest[..i]);
                    let after = &rest[i..];
                    if let Some(stripped) = after.strip_prefix("<!--") {
                        ctx = Ctx::Comment;
                        rest = stripped;
                    } else if let Some(name) = tag_name(after) {
                        let kind = match name.to_ascii_lowercase().as_str() {
                            "script" if !after.starts_with("</") => TagKind::Script,
                            "style" if !after.starts_with("</") => TagKind::Style,
                            _ => TagKind::Plain,
                        };
                        let len = if after.starts_with("</") { 2 } else { 1 } + name.len();
                        out.push_str(&after[..len]);
                        rest = &after[len..];
                        ctx = Ctx::Tag(kind);
                    } else {
                        out.push('<');
                        rest = &after[1..];
                    }
                }
            },
            Ctx::Comment => match rest.find("-->") {
                None => rest = "",
                Some(i) => {
                    rest = &rest[i + 3..];
                    ctx = Ctx::Text;
                }
            },
            Ctx::RawText(el) => {
                let close = format!("</{el}");
                match find_ci(rest, &close) {
                    None => {
                        out.push_str(rest);
                        rest = "";
                    }
                    Some(i) => {
                        out.push_str(&rest[..i]);
                        rest = &rest[i..];
                        ctx = Ctx::Text;
                    }
                }
            }
            Ctx::Tag(kind) => {
                let c = rest.chars().next().expect("non-empty");
                if c == '>' {
                    out.push('>');
                    rest = &rest[1..];
                    ctx = match kind {
                        TagKind::Script => Ctx::RawText("script"),
                        TagKind::Style => Ctx::RawText("style"),
                        TagKind::Plain => Ctx::Text,
                    };
                } else if c.is_whitespace() || c == '/' {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                } else {
                    let end = rest
                        .find(|ch: char| ch.is_whitespace() || ch == '=' || ch == '>' || ch == '/')
                        .unwrap_or(rest.len());
                    let end = end.max(c.len_utf8());
                    let name = &rest[..end];
                    out.push_str(name);
                    rest = &rest[end..];
                    ctx = Ctx::AfterAttrName(kind, attr_kind(name));
                }
            }
            Ctx::AfterAttrName(kind, attr) => {
                let c = rest.chars().next().expect("non-empty");
                if c.is_whitespace() {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                } else if c == '=' {
                    out.push('=');
                    rest = &rest[1..];
                    ctx = Ctx::BeforeValue(kind, attr);
                } else {
                    ctx = Ctx::Tag(kind);
                }
            }
            Ctx::BeforeValue(tag, attr) => {
                let c = rest.chars().next().expect("non-empty");
                let url = (attr == AttrKind::Url).then_some(UrlPart::Start);
                if c.is_whitespace() {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                } else if c == '"' || c == '\'' {
                    out.push(c);
                    rest = &rest[1..];
                    ctx = Ctx::Value { tag, attr, quote: Some(c), url };
                } else if c == '>' {
                    ctx = Ctx::Tag(tag);
                } else {
                    ctx = Ctx::Value { tag, attr, quote: None, url };
                }
            }
            Ctx::Value { tag, attr, quote, url } => {
                let end = match quote {
                    Some(q) => rest.find(q),
                    None => rest.find(|ch: char| ch.is_whitespace() || ch == '>'),
                };
                let value = &rest[..end.unwrap_or(rest.len())];
                out.push_str(value);
                let url = url.map(|part| url_part_after(part, value));
                match end {
                    None => {
                        rest = "";
                        ctx = Ctx::Value { tag, attr, quote, url };
                    }
                    Some(i) => {
                        if let Some(q) = quote {
                            out.push(q);
                            rest = &rest[i + 1..];
                        } else {
                            rest = &rest[i..];
                        }
                        ctx = Ctx::Tag(tag);
                    }
                }
            }
            Ctx::UrlAmbiguous => {
                // Text after an ambiguous join: the value ends at a quote or the tag's end.
                match rest.find(['"', '\'', '>']) {
                    None => {
                        out.push_str(rest);
                        rest = "";
                    }
                    Some(i) => {
                        let c = rest[i..].chars().next().expect("found");
                        out.push_str(&rest[..i + 1]);
                        rest = &rest[i + 1..];
                        ctx = if c == '>' { Ctx::Text } else { Ctx::Tag(TagKind::Plain) };
                    }
                }
            }
        }
    }
    (out, ctx)
}

fn url_part_after(part: UrlPart, literal: &str) -> UrlPart {
    if literal.contains(['?', '#']) {
        UrlPart::QueryOrFrag
    } else if part == UrlPart::Start && !literal.trim().is_empty() {
        UrlPart::PreQuery
    } else {
        part
    }
}

/// The element name of a tag starting at `s` (`<a`, `</p`), if it is one.
fn tag_name(s: &str) -> Option<&str> {
    let body = s.strip_prefix("</").or_else(|| s.strip_prefix('<'))?;
    let end = body.find(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != ':').unwrap_or(body.len());
    if end == 0 || !body.as_bytes()[0].is_ascii_alphabetic() {
        return None;
    }
    Some(&body[..end])
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    let h = hay.to_ascii_lowercase();
    h.find(&needle.to_ascii_lowercase())
}

// ---------------------------------------------------------------------------------------------
// Rendering.

fn render_nodes(nodes: &[Node], data: &Data<'_>, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Print(e, esc) => {
                let v = eval(e, data);
                let s = display(&v);
                escape_into(&s, *esc, out);
            }
            Node::If(branches, otherwise) => {
                let body = branches.iter().find(|(c, _)| truthy(&eval(c, data))).map(|(_, b)| b).unwrap_or(otherwise);
                render_nodes(body, data, out);
            }
        }
    }
}

fn eval<'a>(e: &'a Expr, data: &Data<'a>) -> Val<'a> {
    match e {
        Expr::Str(s) => Val::Str(s),
        Expr::Field(f) => {
            let v = data.vars;
            match f {
                Field::ConfirmationUrl => Val::Str(&v.confirmation_url),
                Field::Token => Val::Str(&v.token),
                Field::TokenHash => Val::Str(&v.token_hash),
                Field::SiteUrl => Val::Str(&v.site_url),
                Field::RedirectTo => Val::Str(&v.redirect_to),
                Field::Email => Val::Str(&v.email),
                Field::NewEmail => Val::Str(&v.new_email),
                Field::SendingTo => Val::Str(data.sending_to),
                Field::Unknown(_) => Val::Missing,
                Field::Data(path) => {
                    let mut cur = &v.data;
                    for key in path {
                        match cur.get(key) {
                            Some(next) => cur = next,
                            None => return Val::Missing,
                        }
                    }
                    Val::Json(cur)
                }
            }
        }
        Expr::Not(a) => Val::Bool(!truthy(&eval(a, data))),
        Expr::Eq(a, rest) => {
            let a = eval(a, data);
            Val::Bool(rest.iter().any(|b| equal(&a, &eval(b, data))))
        }
        Expr::Ne(a, b) => Val::Bool(!equal(&eval(a, data), &eval(b, data))),
        // Go's and/or return an argument; as conditions and printed values that is the same as
        // the first falsy (and) or truthy (or) argument, else the last.
        Expr::And(args) => {
            let mut last = Val::Missing;
            for a in args {
                last = eval(a, data);
                if !truthy(&last) {
                    return last;
                }
            }
            last
        }
        Expr::Or(args) => {
            let mut last = Val::Missing;
            for a in args {
                last = eval(a, data);
                if truthy(&last) {
                    return last;
                }
            }
            last
        }
    }
}

fn truthy(v: &Val<'_>) -> bool {
    match v {
        Val::Str(s) => !s.is_empty(),
        Val::Bool(b) => *b,
        Val::Missing => false,
        Val::Json(j) => match j {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Json::String(s) => !s.is_empty(),
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
        },
    }
}

/// Go's `eq` on basic values; values of different kinds are unequal (Go reports an error).
fn equal(a: &Val<'_>, b: &Val<'_>) -> bool {
    fn norm<'b>(v: &'b Val<'_>) -> Option<Result<&'b str, Result<f64, bool>>> {
        match v {
            Val::Str(s) => Some(Ok(s)),
            Val::Bool(b) => Some(Err(Err(*b))),
            Val::Json(Json::String(s)) => Some(Ok(s.as_str())),
            Val::Json(Json::Bool(b)) => Some(Err(Err(*b))),
            Val::Json(Json::Number(n)) => n.as_f64().map(|f| Err(Ok(f))),
            Val::Json(Json::Null) | Val::Missing => None,
            Val::Json(_) => None,
        }
    }
    match (norm(a), norm(b)) {
        (Some(x), Some(y)) => x == y,
        _ => matches!((a, b), (Val::Missing | Val::Json(Json::Null), Val::Missing | Val::Json(Json::Null))),
    }
}

fn display(v: &Val<'_>) -> String {
    match v {
        Val::Str(s) => (*s).to_owned(),
        Val::Bool(b) => b.to_string(),
        Val::Missing => String::new(),
        // A top-level null is an untyped nil to html/template: it prints nothing (Go issue 25875).
        Val::Json(Json::Null) => String::new(),
        Val::Json(j) => {
            let mut s = String::new();
            go_fmt(j, &mut s);
            s
        }
    }
}

/// Go's `fmt.Sprint` of a value `encoding/json` decoded into `interface{}`.
fn go_fmt(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("<nil>"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&go_float(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => out.push_str(s),
        Json::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_fmt(v, out);
            }
            out.push(']');
        }
        Json::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push_str("map[");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_fmt(&o[k.as_str()], out);
            }
            out.push(']');
        }
    }
}

/// Go's `%v` of a float64: `%g` with the shortest precision, which uses the exponent form when
/// the decimal exponent is below -4 or at least 6 (`1e+06`, `1.234567e+06`, `123456`).
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "d.ddddde-x".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut s = String::new();
    if neg {
        s.push('-');
    }
    if !(-4..6).contains(&exp) {
        s.push_str(&digits[..1]);
        if digits.len() > 1 {
            s.push('.');
            s.push_str(&digits[1..]);
        }
        let _ = write!(s, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    } else if exp < 0 {
        s.push_str("0.");
        for _ in 0..(-exp - 1) {
            s.push('0');
        }
        s.push_str(&digits);
    } else {
        let point = exp as usize + 1;
        if digits.len() <= point {
            s.push_str(&digits);
            for _ in digits.len()..point {
                s.push('0');
            }
        } else {
            s.push_str(&digits[..point]);
            s.push('.');
            s.push_str(&digits[point..]);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Escapers (html/template's).

fn escape_into(s: &str, esc: Escape, out: &mut String) {
    match esc {
        Escape::Elide => {}
        Escape::Html => html_escape(s, false, out),
        Escape::HtmlNoSpace => html_escape(s, true, out),
        Escape::Url(part, quoted) => {
            let url = match part {
                UrlPart::Start => {
                    if safe_url(s) {
                        url_process(s, true)
                    } else {
                        "#ZgotmplZ".to_owned()
                    }
                }
                UrlPart::PreQuery => url_process(s, true),
                UrlPart::QueryOrFrag => url_process(s, false),
            };
            html_escape(&url, !quoted, out);
        }
    }
}

/// Go's `htmlEscaper` (`nospace`: `htmlNospaceEscaper`, for unquoted attribute values).
pub(crate) fn html_escape(s: &str, nospace: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\0' if nospace => out.push_str("&#xfffd;"),
            '\0' => out.push('\u{fffd}'),
            '"' => out.push_str("&#34;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '+' => out.push_str("&#43;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' if nospace => out.push_str("&#9;"),
            '\n' if nospace => out.push_str("&#10;"),
            '\u{b}' if nospace => out.push_str("&#11;"),
            '\u{c}' if nospace => out.push_str("&#12;"),
            '\r' if nospace => out.push_str("&#13;"),
            ' ' if nospace => out.push_str("&#32;"),
            '=' if nospace => out.push_str("&#61;"),
            '`' if nospace => out.push_str("&#96;"),
            c => out.push(c),
        }
    }
}

/// Go's `isSafeURL`: no scheme, or http, https, mailto.
fn safe_url(s: &str) -> bool {
    match s.split_once(':') {
        Some((scheme, _)) if !scheme.contains('/') => {
            scheme.eq_ignore_ascii_case("http")
                || scheme.eq_ignore_ascii_case("https")
                || scheme.eq_ignore_ascii_case("mailto")
        }
        _ => true,
    }
}

/// Go's `urlProcessor`: `norm` keeps reserved characters and `%` (normaliser), otherwise only
/// unreserved ones survive (escaper); the rest is percent-encoded (lower-case hex, as Go).
fn url_process(s: &str, norm: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = match b {
            b'!' | b'#' | b'$' | b'&' | b'*' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' | b'[' | b']' => {
                norm
            }
            b'-' | b'.' | b'_' | b'~' => true,
            b'%' => norm,
            b if b.is_ascii_alphanumeric() => true,
            _ => false,
        };
        if keep {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> MailVars {
        MailVars {
            site_url: "http://127.0.0.1:3000".to_owned(),
            confirmation_url:
                "http://127.0.0.1:54321/auth/v1/verify?token=abc&type=signup&redirect_to=http://127.0.0.1:3000"
                    .to_owned(),
            token: "123456".to_owned(),
            token_hash: "abc".to_owned(),
            redirect_to: "http://127.0.0.1:3000".to_owned(),
            email: "a+b@example.com".to_owned(),
            new_email: "new@example.com".to_owned(),
            data: serde_json::json!({"name": "Tom & \"Jerry\"", "locale": "es", "age": 30, "n": {"x": 1.5}, "big": 1e6, "tags": ["a", "b"], "nul": null, "empty": ""}),
        }
    }

    fn render(src: &str) -> String {
        let v = vars();
        Template::parse("t", src).expect("parses").render(&Data { vars: &v, sending_to: "to@example.com" })
    }

    #[test]
    fn fields_spaced_or_not() {
        assert_eq!(render("{{ .Token }}/{{.Token}}/{{  .TokenHash  }}"), "123456/123456/abc");
        assert_eq!(render("{{ .SendingTo }} {{ .NewEmail }}"), "to@example.com new@example.com");
    }

    #[test]
    fn text_values_are_html_escaped_as_go_does() {
        assert_eq!(render("<p>{{ .Email }}</p>"), "<p>a&#43;b@example.com</p>");
        assert_eq!(render("{{ .Data.name }}"), "Tom &amp; &#34;Jerry&#34;");
        let mut s = String::new();
        html_escape("<'\0>", false, &mut s);
        assert_eq!(s, "&lt;&#39;\u{fffd}&gt;");
    }

    #[test]
    fn href_urls_are_normalised_and_attribute_escaped() {
        assert_eq!(
            render(r#"<a href="{{ .ConfirmationURL }}">x</a>"#),
            r#"<a href="http://127.0.0.1:54321/auth/v1/verify?token=abc&amp;type=signup&amp;redirect_to=http://127.0.0.1:3000">x</a>"#
        );
        // The server-side pattern of Supabase's docs: the hash lands in the query part.
        assert_eq!(
            render(
                r#"<a href="{{ .SiteURL }}/auth/confirm?token_hash={{ .TokenHash }}&type=email&next={{ .RedirectTo }}">"#
            ),
            r#"<a href="http://127.0.0.1:3000/auth/confirm?token_hash=abc&type=email&next=http%3a%2f%2f127.0.0.1%3a3000">"#
        );
        let v = MailVars { redirect_to: "javascript:alert(1)".to_owned(), ..vars() };
        let t = Template::parse("t", r#"<a href='{{ .RedirectTo }}'>"#).unwrap();
        assert_eq!(t.render(&Data { vars: &v, sending_to: "" }), "<a href='#ZgotmplZ'>");
        let v = MailVars { site_url: "http://x/a b\"c".to_owned(), ..vars() };
        let t = Template::parse("t", r#"<img src="{{ .SiteURL }}">"#).unwrap();
        assert_eq!(t.render(&Data { vars: &v, sending_to: "" }), r#"<img src="http://x/a%20b%22c">"#);
    }

    #[test]
    fn unquoted_and_plain_attributes() {
        assert_eq!(render(r#"<p title="{{ .Data.name }}">"#), r#"<p title="Tom &amp; &#34;Jerry&#34;">"#);
        assert_eq!(render("<p title={{ .Data.name }}>"), "<p title=Tom&#32;&amp;&#32;&#34;Jerry&#34;>");
    }

    #[test]
    fn comments_are_removed() {
        assert_eq!(render("a<!-- secret {{ .Token }} -->b"), "ab");
        assert_eq!(render("a{{/* note */}}b"), "ab");
    }

    #[test]
    fn trim_markers() {
        assert_eq!(render("a  {{- .Token -}}  b"), "a123456b");
        assert_eq!(render("a {{ .Token -}}\n\n b"), "a 123456b");
    }

    #[test]
    fn data_values_print_as_go_fmt() {
        assert_eq!(
            render("{{ .Data.age }}|{{ .Data.n.x }}|{{ .Data.big }}|{{ .Data.tags }}"),
            "30|1.5|1e&#43;06|[a b]"
        );
        assert_eq!(render("{{ .Data.n }}"), "map[x:1.5]");
        assert_eq!(render("[{{ .Data.missing }}][{{ .Data.nul }}][{{ .Data.name.first }}][{{ .Nope }}]"), "[][][][]");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(123456789.0), "1.23456789e+08");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(-2.5), "-2.5");
    }

    #[test]
    fn if_else_with_eq_ne_not_and_or() {
        let src = r#"{{ if eq .Data.locale "es" }}Hola{{ else if eq .Data.locale "fr" }}Salut{{ else }}Hello{{ end }}"#;
        assert_eq!(render(src), "Hola");
        assert_eq!(render(r#"{{ if .Data.empty }}y{{ else }}n{{ end }}"#), "n");
        assert_eq!(render(r#"{{ if not .Data.missing }}y{{ end }}"#), "y");
        assert_eq!(render(r#"{{ if and .Token (ne .Email "x") }}y{{ end }}"#), "y");
        assert_eq!(render(r#"{{ if or .Data.empty .Data.missing }}y{{ else }}n{{ end }}"#), "n");
        assert_eq!(render(r#"{{ if eq .Data.age "30" }}y{{ else }}n{{ end }}"#), "n");
        assert_eq!(render(r#"{{ if eq .Data.locale "de" "es" }}y{{ end }}"#), "y");
        assert_eq!(render(r#"{{ if .Data.tags }}<b>{{ .Token }}</b>{{ end }}"#), "<b>123456</b>");
    }

    #[test]
    fn unsupported_syntax_is_a_load_error() {
        for bad in [
            "{{ range .Data }}x{{ end }}",
            "{{ .Token | html }}",
            "{{ $x := 1 }}",
            "{{ printf \"%s\" .Token }}",
            "{{ if .Token }}x",
            "{{ end }}",
            "{{ .Token",
            "<script>var t = '{{ .Token }}';</script>",
            "<a onclick=\"{{ .Token }}\">",
            "<a {{ .Token }}>",
            "{{ . }}",
            "{{ eq .Token 1 }}",
        ] {
            assert!(Template::parse("t", bad).is_err(), "{bad} should be refused");
        }
        // After the script element the context is text again.
        assert_eq!(
            render("<script>if (a < b) {}</script><p>{{ .Token }}</p>"),
            "<script>if (a < b) {}</script><p>123456</p>"
        );
    }

    #[test]
    fn ambiguous_url_parts_are_refused() {
        let src = r#"<a href="{{ if .Token }}http://a?{{ else }}http://b/{{ end }}{{ .Email }}">"#;
        assert!(Template::parse("t", src).is_err());
        let src = r#"<a href="{{ if .Token }}http://a?x=1{{ else }}http://b?y=2{{ end }}&e={{ .Email }}">"#;
        assert_eq!(render(src), r#"<a href="http://a?x=1&e=a%2bb%40example.com">"#);
    }
}
