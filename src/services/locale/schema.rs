//! GraphQL of the locale service: the root field `locale`, the caller's country
//! and the reference lists, each list translated into the request's locale.
//! Public: no key or session is asked for.

use std::net::IpAddr;

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, Object, ResolverContext, TypeRef};

use crate::graphql::SchemaParts;
use crate::graphql::types::{app, object, prop};
use crate::services::projects::Project;
use crate::services::users::service::ClientInfo;

use super::data::{Continent, Country, Locale, LocaleData, Names, data};
use super::negotiate;

pub fn register(parts: &mut SchemaParts, _project: &Project) {
    parts.add_type(locale_type());
    parts.add_type(country_type());
    parts.add_type(phone_type());
    parts.add_type(continent_type());
    parts.add_type(currency_type());
    parts.add_type(language_type());
    parts.add_type(locale_code_type());

    parts.query(locale());
    parts.answers_alike(super::cache::Lists);
}

/// The client of the request, as the transport saw it.
fn client<'a>(ctx: &ResolverContext<'a>) -> Option<&'a ClientInfo> {
    ctx.data_opt::<ClientInfo>()
}

/// The locale the request is answered in.
fn requested(ctx: &ResolverContext<'_>) -> Locale {
    let asked = client(ctx).map_or("", |c| c.locale.as_str());
    negotiate::pick(data(), asked)
}

fn text(value: &str) -> Value {
    Value::from(value)
}

fn opt_text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, Value::from)
}

fn locale() -> Field {
    Field::new("locale", TypeRef::named_nn("Locale"), |ctx| {
        // Resolved at once: no future to allocate.
        let state = match app(&ctx) {
            Ok(state) => state,
            Err(err) => {
                return FieldFuture::new(async move {
                    Err::<Option<FieldValue>, async_graphql::Error>(err.into())
                });
            }
        };
        let ip = client(&ctx).map_or("", |c| c.ip.as_str());
        let country = ip
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| state.geoip.country(ip))
            .and_then(|code| data().country(&code));
        FieldFuture::Value(Some(FieldValue::owned_any(Place { country })))
    })
    .description(
        "Where the caller is, by its client address, and the world's reference data in the \
         request's language (`X-Nimbus-Locale`, else `Accept-Language`; English by default). \
         Public.",
    )
}

/// The caller's place, as `locale` found it. Each field of `Locale` reads what it
/// needs from it when selected, so that `{ locale { countryCode } }` costs one
/// address lookup and builds nothing else (no names in the request's language,
/// no object of every field).
struct Place {
    country: Option<&'static Country>,
}

/// A field of `Locale` read from its [`Place`] by `read` (null for `Value::Null`).
fn place_field(
    name: &str,
    ty: TypeRef,
    about: &str,
    read: fn(&ResolverContext<'_>, Option<&'static Country>) -> Value,
) -> Field {
    Field::new(name, ty, move |ctx| {
        let country = ctx
            .parent_value
            .try_downcast_ref::<Place>()
            .ok()
            .and_then(|place| place.country);
        let value = read(&ctx, country);
        FieldFuture::from_value((value != Value::Null).then_some(value))
    })
    .description(about)
}

fn continent_of(country: &Country) -> Option<&'static Continent> {
    data().continent(&country.continent)
}

/// A list field of `Locale`, built from the data in the request's locale.
fn list(
    name: &str,
    item: &str,
    about: &str,
    build: fn(&LocaleData, Locale) -> Vec<Value>,
) -> Field {
    Field::new(name, TypeRef::named_nn_list_nn(item), move |ctx| {
        FieldFuture::new(async move {
            let items = build(data(), requested(&ctx));
            Ok(Some(FieldValue::value(Value::List(items))))
        })
    })
    .description(about)
}

fn code_and_name(code: &str, names: &Names, locale: Locale) -> Value {
    object([("code", text(code)), ("name", text(names.get(locale)))])
}

/// Places in the order Appwrite lists them: by their name in the request's
/// language, compared as text (byte by byte, so `Österreich` after `Zypern`).
fn by_name<'a, T>(places: impl Iterator<Item = &'a T>, name: impl Fn(&T) -> &str) -> Vec<&'a T>
where
    T: 'a,
{
    let mut sorted: Vec<&T> = places.collect();
    sorted.sort_by(|a, b| name(a).cmp(name(b)));
    sorted
}

fn countries(data: &LocaleData, locale: Locale) -> Vec<Value> {
    by_name(data.countries.iter(), |c| c.names.get(locale))
        .into_iter()
        .map(|c| code_and_name(&c.code, &c.names, locale))
        .collect()
}

fn countries_eu(data: &LocaleData, locale: Locale) -> Vec<Value> {
    by_name(data.countries.iter().filter(|c| c.eu), |c| {
        c.names.get(locale)
    })
    .into_iter()
    .map(|c| code_and_name(&c.code, &c.names, locale))
    .collect()
}

/// Calling codes in the order Appwrite lists them: by the code as text (`+1`,
/// `+1242`, `+20`, …); countries sharing one in the order of their codes.
fn countries_phones(data: &LocaleData, locale: Locale) -> Vec<Value> {
    let mut phones: Vec<(&str, &Country)> = data
        .countries
        .iter()
        .flat_map(|c| c.phones.iter().map(move |phone| (phone.as_str(), c)))
        .collect();
    phones.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.code.cmp(&b.1.code)));
    phones
        .into_iter()
        .map(|(phone, c)| {
            object([
                ("code", text(phone)),
                ("countryCode", text(&c.code)),
                ("countryName", text(c.names.get(locale))),
            ])
        })
        .collect()
}

fn continents(data: &LocaleData, locale: Locale) -> Vec<Value> {
    by_name(data.continents.iter(), |c| c.names.get(locale))
        .into_iter()
        .map(|c| code_and_name(&c.code, &c.names, locale))
        .collect()
}

/// Currencies in the order Appwrite lists them: the US dollar, the Canadian
/// dollar and the euro first, then by code.
fn currencies(data: &LocaleData, locale: Locale) -> Vec<Value> {
    const FIRST: [&str; 3] = ["USD", "CAD", "EUR"];
    let rank = |code: &str| FIRST.iter().position(|f| *f == code).unwrap_or(FIRST.len());
    let mut sorted: Vec<_> = data.currencies.iter().collect();
    sorted.sort_by(|a, b| {
        rank(&a.code)
            .cmp(&rank(&b.code))
            .then_with(|| a.code.cmp(&b.code))
    });
    sorted
        .into_iter()
        .map(|c| {
            object([
                ("code", text(&c.code)),
                ("symbol", text(&c.symbol)),
                ("symbolNative", text(&c.symbol_native)),
                ("name", text(c.names.get(locale))),
                ("namePlural", text(c.plurals.get(locale))),
                ("decimalDigits", Value::from(c.decimal_digits)),
                ("rounding", Value::from(c.rounding)),
            ])
        })
        .collect()
}

fn languages(data: &LocaleData, locale: Locale) -> Vec<Value> {
    data.languages
        .iter()
        .map(|l| {
            object([
                ("code", text(&l.code)),
                ("name", text(l.names.get(locale))),
                ("nativeName", text(&l.native_name)),
            ])
        })
        .collect()
}

fn locale_codes(data: &LocaleData, locale: Locale) -> Vec<Value> {
    data.locale_codes
        .iter()
        .map(|c| code_and_name(&c.code, &c.names, locale))
        .collect()
}

fn locale_type() -> Object {
    let string = || TypeRef::named(TypeRef::STRING);
    Object::new("Locale")
        .description(
            "The caller's place, from its client address (behind a proxy listed in \
             `NIMBUS_TRUSTED_PROXIES`, the forwarded one), and the reference lists. Where the \
             address has no country (loopback, private networks, unknown ranges) the country \
             fields are null and `eu` is false.",
        )
        .field(place_field(
            "ip",
            TypeRef::named_nn(TypeRef::STRING),
            "The client address the server sees.",
            |ctx, _| text(client(ctx).map_or("", |c| c.ip.as_str())),
        ))
        .field(place_field(
            "countryCode",
            string(),
            "ISO 3166-1 alpha-2 code of its country.",
            |_, country| opt_text(country.map(|c| c.code.as_str())),
        ))
        .field(place_field(
            "country",
            string(),
            "Name of its country, in the request's language.",
            |ctx, country| opt_text(country.map(|c| c.names.get(requested(ctx)))),
        ))
        .field(place_field(
            "continentCode",
            string(),
            "Code of its continent: AF, AN, AS, EU, NA, OC or SA.",
            |_, country| opt_text(country.and_then(continent_of).map(|c| c.code.as_str())),
        ))
        .field(place_field(
            "continent",
            string(),
            "Name of its continent, in the request's language.",
            |ctx, country| {
                opt_text(
                    country
                        .and_then(continent_of)
                        .map(|c| c.names.get(requested(ctx))),
                )
            },
        ))
        .field(place_field(
            "eu",
            TypeRef::named_nn(TypeRef::BOOLEAN),
            "Whether its country is a member state of the European Union.",
            |_, country| Value::from(country.is_some_and(|c| c.eu)),
        ))
        .field(place_field(
            "currency",
            string(),
            "ISO 4217 code of its country's main currency.",
            |_, country| {
                opt_text(
                    country
                        .and_then(|c| c.currencies.first())
                        .map(String::as_str),
                )
            },
        ))
        .field(list(
            "countries",
            "LocaleCountry",
            "Every country (ISO 3166-1), by code.",
            countries,
        ))
        .field(list(
            "countriesEU",
            "LocaleCountry",
            "The member states of the European Union, by code.",
            countries_eu,
        ))
        .field(list(
            "countriesPhones",
            "LocalePhone",
            "International calling codes, one entry per country and code, by country.",
            countries_phones,
        ))
        .field(list(
            "continents",
            "LocaleContinent",
            "The seven continents, by code.",
            continents,
        ))
        .field(list(
            "currencies",
            "LocaleCurrency",
            "Currencies in use (ISO 4217), by code.",
            currencies,
        ))
        .field(list(
            "languages",
            "LocaleLanguage",
            "Languages (ISO 639-1), by code.",
            languages,
        ))
        .field(list(
            "localeCodes",
            "LocaleCode",
            "The locales this server translates into, by code; any other falls back to English.",
            locale_codes,
        ))
}

fn code_name_type(name: &str, about: &str, code: &str, name_about: &str) -> Object {
    Object::new(name)
        .description(about)
        .field(prop("code", TypeRef::named_nn(TypeRef::STRING), code))
        .field(prop("name", TypeRef::named_nn(TypeRef::STRING), name_about))
}

fn country_type() -> Object {
    code_name_type(
        "LocaleCountry",
        "A country.",
        "ISO 3166-1 alpha-2 code.",
        "Name in the request's language.",
    )
}

fn continent_type() -> Object {
    code_name_type(
        "LocaleContinent",
        "A continent.",
        "AF, AN, AS, EU, NA, OC or SA.",
        "Name in the request's language.",
    )
}

fn locale_code_type() -> Object {
    code_name_type(
        "LocaleCode",
        "A locale the server translates into.",
        "Its code, as `X-Nimbus-Locale` takes it (`de`, `pt`, `zh`).",
        "Its name in the request's language.",
    )
}

fn phone_type() -> Object {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    Object::new("LocalePhone")
        .description("An international calling code of a country.")
        .field(prop(
            "code",
            string(),
            "The calling code, with its `+` (`+33`).",
        ))
        .field(prop(
            "countryCode",
            string(),
            "ISO 3166-1 alpha-2 code of the country.",
        ))
        .field(prop(
            "countryName",
            string(),
            "Name of the country in the request's language.",
        ))
}

fn currency_type() -> Object {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    Object::new("LocaleCurrency")
        .description("A currency.")
        .field(prop("code", string(), "ISO 4217 code."))
        .field(prop(
            "symbol",
            string(),
            "Symbol as English text writes it (`€`, `CA$`).",
        ))
        .field(prop(
            "symbolNative",
            string(),
            "Symbol as its own country writes it.",
        ))
        .field(prop("name", string(), "Name in the request's language."))
        .field(prop(
            "namePlural",
            string(),
            "Plural name in the request's language.",
        ))
        .field(prop(
            "decimalDigits",
            TypeRef::named_nn(TypeRef::INT),
            "Digits after the decimal separator.",
        ))
        .field(prop(
            "rounding",
            TypeRef::named_nn(TypeRef::FLOAT),
            "Rounding increment of amounts (0: to the last digit).",
        ))
}

fn language_type() -> Object {
    let string = || TypeRef::named_nn(TypeRef::STRING);
    Object::new("LocaleLanguage")
        .description("A language.")
        .field(prop("code", string(), "ISO 639-1 code."))
        .field(prop("name", string(), "Name in the request's language."))
        .field(prop("nativeName", string(), "Name in the language itself."))
}
