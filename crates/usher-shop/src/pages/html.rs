//! The one HTML page: plain server-rendered markup with forms posting to the form routes and a
//! little inline CSS — no script and no build step, so it works in any browser and a person can
//! watch which shop served them and whether their session followed.
//!
//! Everything that came from a user (names) is escaped with [`escape`]; everything else is
//! fixed text from this crate.

use std::fmt::Write as _;

use crate::api::prefs::{Language, Prefs, Theme};
use crate::catalogue::{PRODUCTS, Product};
use crate::db::Order;

use super::text::{Text, code, text};

/// What the page shows.
#[derive(Debug)]
pub struct Page<'a> {
    /// This shop's id.
    pub server: &'a str,
    /// The session store's kind.
    pub store: &'a str,
    /// The signed-in user.
    pub user: Option<&'a str>,
    /// Cart lines.
    pub cart: &'a [(&'static Product, i64)],
    /// Recent orders (signed in only).
    pub orders: &'a [Order],
    /// Preferences.
    pub prefs: Prefs,
    /// A short confirmation (`?m=`), already mapped to known text.
    pub notice: Option<&'a str>,
    /// An error code (`?e=`), already checked against known codes.
    pub error: Option<&'a str>,
}

/// HTML-escapes `s` for text and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1290` → `12.90`.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let c = cents.unsigned_abs();
    format!("{sign}{}.{:02}", c / 100, c % 100)
}

const CSS_LIGHT: &str = "body{color-scheme:light;--bg:#fafaf7;--fg:#222;--muted:#666;--box:#fff;--line:#ddd;--accent:#2a6}";
const CSS_DARK: &str = "body{color-scheme:dark;--bg:#16181c;--fg:#e8e8e8;--muted:#9a9a9a;--box:#20242a;--line:#333;--accent:#4c9}";
const CSS: &str = "body{font:16px/1.45 system-ui,sans-serif;margin:0;background:var(--bg);color:var(--fg)}\
header{display:flex;gap:1em;flex-wrap:wrap;align-items:center;padding:.8em 1.2em;border-bottom:1px solid var(--line)}\
header h1{font-size:1.2em;margin:0 auto 0 0}.srv{font-family:monospace;background:var(--accent);color:#fff;padding:.1em .5em;border-radius:4px}\
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:1em;padding:1em 1.2em}\
section{background:var(--box);border:1px solid var(--line);border-radius:8px;padding:.8em 1em}\
h2{font-size:1.05em;margin:.2em 0 .6em}table{width:100%;border-collapse:collapse}td{padding:.25em .3em;border-top:1px solid var(--line)}\
td.n{text-align:right;white-space:nowrap}input,select,button{font:inherit}input[type=number]{width:4em}\
.note{margin:1em 1.2em 0;padding:.5em .8em;border-radius:6px;background:var(--box);border:1px solid var(--accent)}\
.err{border-color:#c33}.muted{color:var(--muted)}form.inline{display:inline}label{display:block;margin:.3em 0}";

/// Renders the whole page.
pub fn render(p: &Page<'_>) -> String {
    let t = text(p.prefs.language);
    let theme = match p.prefs.theme {
        Theme::Light => CSS_LIGHT,
        Theme::Dark => CSS_DARK,
    };
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} · {}</title><style>{theme}{CSS}</style></head><body>\
         <header><h1>{}</h1><span>{} <span class=\"srv\">{}</span> · {} {}</span>",
        code(p.prefs.language),
        t.title,
        escape(p.server),
        t.title,
        t.served_by,
        escape(p.server),
        t.sessions_in,
        escape(p.store),
    );
    match p.user {
        Some(u) => {
            let _ = write!(
                h,
                "<span>{} <b>{}</b></span><form class=\"inline\" method=\"post\" action=\"/logout\">\
                 <button>{}</button></form>",
                t.signed_in_as,
                escape(u),
                t.sign_out
            );
        }
        None => {
            let _ = write!(h, "<span class=\"muted\">{}</span>", t.not_signed_in);
        }
    }
    h.push_str("</header>");
    if let Some(n) = p.notice {
        let _ = write!(h, "<p class=\"note\">{}</p>", escape(n));
    }
    if let Some(e) = p.error {
        let _ = write!(h, "<p class=\"note err\">{}: {}</p>", t.failed, escape(e));
    }
    h.push_str("<main>");
    if p.user.is_none() {
        account_forms(&mut h, t);
    }
    catalogue(&mut h, t, p.user.is_some());
    cart(&mut h, t, p.cart, p.user.is_some());
    if p.user.is_some() {
        orders(&mut h, t, p.orders);
    }
    prefs(&mut h, t, p.prefs);
    h.push_str("</main></body></html>");
    h
}

fn account_forms(h: &mut String, t: &Text) {
    for (action, label, autocomplete) in [
        ("/login", t.sign_in, "current-password"),
        ("/signup", t.sign_up, "new-password"),
    ] {
        let _ = write!(
            h,
            "<section><h2>{label}</h2><form method=\"post\" action=\"{action}\">\
             <label>{} <input name=\"user\" required maxlength=\"64\" autocomplete=\"username\"></label>\
             <label>{} <input name=\"password\" type=\"password\" required maxlength=\"256\" \
             autocomplete=\"{autocomplete}\"></label><button>{label}</button></form></section>",
            t.user, t.password
        );
    }
}

fn catalogue(h: &mut String, t: &Text, signed_in: bool) {
    let _ = write!(h, "<section><h2>{}</h2><table>", t.catalogue);
    for p in &PRODUCTS {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">",
            escape(p.name),
            money(p.price_cents)
        );
        if signed_in {
            let _ = write!(
                h,
                "<form class=\"inline\" method=\"post\" action=\"/cart/add\">\
                 <input type=\"hidden\" name=\"sku\" value=\"{}\">\
                 <input type=\"number\" name=\"qty\" value=\"1\" min=\"1\" max=\"100\">\
                 <button>{}</button></form>",
                escape(p.sku),
                t.add
            );
        }
        h.push_str("</td></tr>");
    }
    h.push_str("</table>");
    if !signed_in {
        let _ = write!(h, "<p class=\"muted\">{}</p>", t.sign_in_to_buy);
    }
    h.push_str("</section>");
}

fn cart(h: &mut String, t: &Text, lines: &[(&'static Product, i64)], signed_in: bool) {
    let _ = write!(h, "<section><h2>{}</h2>", t.cart);
    if lines.is_empty() {
        let _ = write!(h, "<p class=\"muted\">{}</p></section>", t.cart_empty);
        return;
    }
    h.push_str("<table>");
    let mut total = 0i64;
    for (p, qty) in lines {
        let line = p.price_cents.saturating_mul(*qty);
        total = total.saturating_add(line);
        let _ = write!(
            h,
            "<tr><td>{qty} × {}</td><td class=\"n\">{}</td><td class=\"n\">",
            escape(p.name),
            money(line)
        );
        if signed_in {
            let _ = write!(
                h,
                "<form class=\"inline\" method=\"post\" action=\"/cart/remove\">\
                 <input type=\"hidden\" name=\"sku\" value=\"{}\"><button>{}</button></form>",
                escape(p.sku),
                t.remove
            );
        }
        h.push_str("</td></tr>");
    }
    let _ = write!(
        h,
        "<tr><td><b>{}</b></td><td class=\"n\"><b>{}</b></td><td></td></tr></table>",
        t.total,
        money(total)
    );
    if signed_in {
        let _ = write!(
            h,
            "<form method=\"post\" action=\"/checkout\"><button>{}</button></form>",
            t.checkout
        );
    }
    h.push_str("</section>");
}

fn orders(h: &mut String, t: &Text, orders: &[Order]) {
    let _ = write!(h, "<section><h2>{}</h2>", t.orders);
    if orders.is_empty() {
        let _ = write!(h, "<p class=\"muted\">{}</p></section>", t.no_orders);
        return;
    }
    h.push_str("<table>");
    for o in orders {
        let items: Vec<String> = o
            .items
            .iter()
            .map(|l| format!("{} × {}", l.qty, escape(&l.name)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{} #{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            t.order,
            o.id,
            items.join(", "),
            money(o.total_cents)
        );
    }
    h.push_str("</table></section>");
}

fn prefs(h: &mut String, t: &Text, prefs: Prefs) {
    let sel = |on: bool| if on { " selected" } else { "" };
    let _ = write!(
        h,
        "<section><h2>{}</h2><form method=\"post\" action=\"/prefs\">\
         <label>{} <select name=\"theme\"><option value=\"light\"{}>light</option>\
         <option value=\"dark\"{}>dark</option></select></label>\
         <label>{} <select name=\"language\"><option value=\"en\"{}>English</option>\
         <option value=\"de\"{}>Deutsch</option><option value=\"fr\"{}>Français</option></select></label>\
         <button>{}</button></form></section>",
        t.preferences,
        t.theme,
        sel(prefs.theme == Theme::Light),
        sel(prefs.theme == Theme::Dark),
        t.language,
        sel(prefs.language == Language::En),
        sel(prefs.language == Language::De),
        sel(prefs.language == Language::Fr),
        t.save
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(money(1290), "12.90");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-150), "-1.50");
    }

    #[test]
    fn renders_the_right_sections() {
        let mug = catalogue::find("mug").unwrap();
        let anon = render(&Page {
            server: "shop-<0>",
            store: "memory",
            user: None,
            cart: &[],
            orders: &[],
            prefs: Prefs::default(),
            notice: None,
            error: Some("bad_credentials"),
        });
        assert!(anon.contains("shop-&lt;0&gt;") && !anon.contains("shop-<0>"));
        assert!(anon.contains("action=\"/login\"") && anon.contains("action=\"/signup\""));
        assert!(!anon.contains("action=\"/cart/add\""));
        assert!(anon.contains("bad_credentials"));
        let signed = render(&Page {
            server: "shop-1",
            store: "redis",
            user: Some("ann"),
            cart: &[(mug, 2)],
            orders: &[],
            prefs: Prefs {
                theme: Theme::Dark,
                language: Language::De,
            },
            notice: Some("ok"),
            error: None,
        });
        assert!(signed.contains("Angemeldet als <b>ann</b>"));
        assert!(signed.contains("lang=\"de\"") && signed.contains(CSS_DARK));
        assert!(
            signed.contains("action=\"/checkout\"") && signed.contains(&money(2 * mug.price_cents))
        );
        assert!(!signed.contains("action=\"/login\""));
    }
}
