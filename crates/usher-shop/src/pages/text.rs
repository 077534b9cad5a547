//! The pages' words in each [`Language`] the preferences offer. A struct of strings per
//! language, so a missing translation is a compile error rather than a blank on the page.

use crate::api::prefs::Language;

/// Every string the pages show.
#[derive(Debug)]
pub struct Text {
    pub title: &'static str,
    pub served_by: &'static str,
    pub sessions_in: &'static str,
    pub signed_in_as: &'static str,
    pub not_signed_in: &'static str,
    pub sign_in: &'static str,
    pub sign_up: &'static str,
    pub sign_out: &'static str,
    pub user: &'static str,
    pub password: &'static str,
    pub catalogue: &'static str,
    pub add: &'static str,
    pub sign_in_to_buy: &'static str,
    pub cart: &'static str,
    pub cart_empty: &'static str,
    pub remove: &'static str,
    pub total: &'static str,
    pub checkout: &'static str,
    pub orders: &'static str,
    pub no_orders: &'static str,
    pub order: &'static str,
    pub preferences: &'static str,
    pub theme: &'static str,
    pub language: &'static str,
    pub save: &'static str,
    pub failed: &'static str,
}

const EN: Text = Text {
    title: "Usher shop",
    served_by: "Served by",
    sessions_in: "sessions in",
    signed_in_as: "Signed in as",
    not_signed_in: "You are not signed in.",
    sign_in: "Sign in",
    sign_up: "Create account",
    sign_out: "Sign out",
    user: "User",
    password: "Password",
    catalogue: "Catalogue",
    add: "Add",
    sign_in_to_buy: "Sign in to buy.",
    cart: "Cart",
    cart_empty: "Your cart is empty.",
    remove: "Remove",
    total: "Total",
    checkout: "Check out",
    orders: "Orders",
    no_orders: "No orders yet.",
    order: "Order",
    preferences: "Preferences",
    theme: "Theme",
    language: "Language",
    save: "Save",
    failed: "That did not work",
};

const DE: Text = Text {
    title: "Usher-Laden",
    served_by: "Ausgeliefert von",
    sessions_in: "Sitzungen in",
    signed_in_as: "Angemeldet als",
    not_signed_in: "Sie sind nicht angemeldet.",
    sign_in: "Anmelden",
    sign_up: "Konto anlegen",
    sign_out: "Abmelden",
    user: "Name",
    password: "Passwort",
    catalogue: "Sortiment",
    add: "Hinzufügen",
    sign_in_to_buy: "Zum Kaufen bitte anmelden.",
    cart: "Warenkorb",
    cart_empty: "Ihr Warenkorb ist leer.",
    remove: "Entfernen",
    total: "Summe",
    checkout: "Bestellen",
    orders: "Bestellungen",
    no_orders: "Noch keine Bestellungen.",
    order: "Bestellung",
    preferences: "Einstellungen",
    theme: "Farbschema",
    language: "Sprache",
    save: "Speichern",
    failed: "Das hat nicht geklappt",
};

const FR: Text = Text {
    title: "Boutique Usher",
    served_by: "Servi par",
    sessions_in: "sessions dans",
    signed_in_as: "Connecté en tant que",
    not_signed_in: "Vous n’êtes pas connecté.",
    sign_in: "Se connecter",
    sign_up: "Créer un compte",
    sign_out: "Se déconnecter",
    user: "Nom",
    password: "Mot de passe",
    catalogue: "Catalogue",
    add: "Ajouter",
    sign_in_to_buy: "Connectez-vous pour acheter.",
    cart: "Panier",
    cart_empty: "Votre panier est vide.",
    remove: "Retirer",
    total: "Total",
    checkout: "Commander",
    orders: "Commandes",
    no_orders: "Aucune commande.",
    order: "Commande",
    preferences: "Préférences",
    theme: "Thème",
    language: "Langue",
    save: "Enregistrer",
    failed: "Cela n’a pas marché",
};

/// The strings for `lang`.
pub fn text(lang: Language) -> &'static Text {
    match lang {
        Language::En => &EN,
        Language::De => &DE,
        Language::Fr => &FR,
    }
}

/// The language's code for `<html lang>`.
pub fn code(lang: Language) -> &'static str {
    match lang {
        Language::En => "en",
        Language::De => "de",
        Language::Fr => "fr",
    }
}
