//! The products: a fixed list in code. The lab measures where sessions live, not inventory, so
//! the catalogue needs no database and is the same in every shop process.

use serde::Serialize;

/// One product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Product {
    /// Stable identifier used by the cart and the API.
    pub sku: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Price in cents (integers: no rounding in totals).
    pub price_cents: i64,
}

const fn p(sku: &'static str, name: &'static str, price_cents: i64) -> Product {
    Product {
        sku,
        name,
        price_cents,
    }
}

/// Every product, in display order.
pub const PRODUCTS: [Product; 12] = [
    p("tea-green", "Green tea, 100 g", 650),
    p("tea-black", "Black tea, 100 g", 590),
    p("coffee-beans", "Coffee beans, 250 g", 1290),
    p("mug", "Stoneware mug", 1450),
    p("teapot", "Cast-iron teapot", 4900),
    p("kettle", "Gooseneck kettle", 6900),
    p("grinder", "Hand grinder", 5900),
    p("filter-papers", "Filter papers, 100 pcs", 450),
    p("honey", "Wildflower honey, 250 g", 890),
    p("biscuits", "Oat biscuits", 375),
    p("tray", "Bamboo tray", 2400),
    p("gift-card", "Gift card", 2500),
];

/// The product with `sku`, if any.
pub fn find(sku: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.sku == sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_are_unique_and_findable() {
        for (i, a) in PRODUCTS.iter().enumerate() {
            assert_eq!(find(a.sku), Some(a));
            assert!(a.price_cents > 0);
            assert!(
                a.sku.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "skus are safe in paths and session field names"
            );
            assert!(PRODUCTS[i + 1..].iter().all(|b| b.sku != a.sku));
        }
        assert_eq!(find("nope"), None);
        assert_eq!(find(""), None);
    }
}
