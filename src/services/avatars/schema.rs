//! GraphQL of the avatars service: the root field `avatars`, whose fields check
//! their arguments as the image endpoints do and answer the URL that serves the
//! image, so a bad parameter fails here rather than in an `<img>`. Public unless
//! the project turned `avatarsPublic` off (checked on `avatars` itself, so on every
//! field); `initials` without a name reads the caller (its signed-in user). The
//! URLs of a project other than `default` name it (`?project=`), since an `<img>`
//! sends no header.

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};

use unicode_segmentation::UnicodeSegmentation as _;

use crate::error::AppResult;
use crate::graphql::SchemaParts;
use crate::graphql::types::{app, caller, object, opt_string};
use crate::services::projects::{DEFAULT_PROJECT, Project};

use super::flags::{self, FlagParams};
use super::icons::{self, IconParams, IconSet};
use super::initials::{self, InitialsParams};
use super::invalid;
use super::qr::{self, QrParams};

pub fn register(parts: &mut SchemaParts, _project: &Project) {
    parts.add_type(avatars_type());
    parts.query(avatars());
}

fn avatars() -> Field {
    Field::new("avatars", TypeRef::named_nn("Avatars"), |ctx| {
        FieldFuture::new(async move {
            super::grant(caller(&ctx)?)?;
            Ok(Some(FieldValue::value(object([]))))
        })
    })
    .description("URLs of generated images (QR codes, country flags, browser and credit-card icons, initials), remote images and favicons. Public unless the project's `avatarsPublic` is off: then only for signed-in users and API keys, and `AVATARS_NOT_PUBLIC` for anyone else.")
}

fn avatars_type() -> Object {
    Object::new("Avatars")
        .description(
            "Generated images, each served at a URL under `/v1/avatars/`. A field checks its \
             arguments and answers the URL; the image is made when the URL is fetched.",
        )
        .field(qr_field())
        .field(flag_field())
        .field(icon_field("browser", &icons::BROWSERS))
        .field(icon_field("creditCard", &icons::CREDIT_CARDS))
        .field(initials_field())
        .field(remote_field("image"))
        .field(remote_field("favicon"))
}

/// The URL of the avatar endpoint `kind` with `query`, absolute when
/// `NIMBUS_PUBLIC_URL` is set, naming the caller's project unless it is the
/// default one.
fn avatar_url(
    ctx: &ResolverContext<'_>,
    kind: &str,
    query: &[(&str, String)],
) -> AppResult<String> {
    let state = app(ctx)?;
    let project = &caller(ctx)?.project.id;
    let base = state
        .config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    serializer.extend_pairs(query);
    if project != DEFAULT_PROJECT {
        serializer.append_pair("project", project);
    }
    let query = serializer.finish().replace('+', "%20");
    Ok(format!("{base}/v1/avatars/{kind}?{query}"))
}

fn opt_int(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<i64>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .i64()
            .map(Some)
            .map_err(|_| invalid(name, "expected an integer")),
    }
}

fn opt_bool(ctx: &ResolverContext<'_>, name: &str) -> AppResult<bool> {
    Ok(ctx
        .args
        .get(name)
        .and_then(|v| v.boolean().ok())
        .unwrap_or(false))
}

fn qr_field() -> Field {
    Field::new("qr", TypeRef::named_nn(TypeRef::STRING), |ctx| {
        FieldFuture::new(async move {
            let text = opt_string(&ctx, "text")?;
            let params = QrParams::new(
                text.as_deref(),
                opt_int(&ctx, "size")?,
                opt_int(&ctx, "margin")?,
                opt_string(&ctx, "output")?.as_deref(),
                opt_bool(&ctx, "download")?,
            )?;
            let mut query = vec![
                ("text", params.text.clone()),
                ("size", params.size.to_string()),
                ("margin", params.margin.to_string()),
            ];
            if let Some(output) = params.output {
                query.push(("output", output.extension().to_string()));
            }
            if params.download {
                query.push(("download", "true".to_string()));
            }
            let url = avatar_url(&ctx, "qr", &query)?;
            Ok(Some(FieldValue::value(Value::from(url))))
        })
    })
    .description("The URL of a QR code of `text` (`/v1/avatars/qr`), black on white.")
    .argument(
        InputValue::new("text", TypeRef::named_nn(TypeRef::STRING)).description(format!(
            "What to encode, 1 to {} bytes of UTF-8.",
            qr::MAX_TEXT_BYTES
        )),
    )
    .argument(
        InputValue::new("size", TypeRef::named(TypeRef::INT)).description(format!(
            "Width and height in pixels, 1 to {}; {} by default.",
            qr::MAX_QR_SIZE,
            qr::DEFAULT_SIZE
        )),
    )
    .argument(
        InputValue::new("margin", TypeRef::named(TypeRef::INT)).description(format!(
            "The quiet zone around the code, 0 to {} modules; {} by default.",
            qr::MAX_MARGIN,
            qr::DEFAULT_MARGIN
        )),
    )
    .argument(
        InputValue::new("output", TypeRef::named(TypeRef::STRING)).description(
            "`png`, `svg`, `jpg` or `webp`; without it the request's `Accept` header decides (PNG \
         by default).",
        ),
    )
    .argument(
        InputValue::new("download", TypeRef::named(TypeRef::BOOLEAN))
            .description("Served as an attachment (`Content-Disposition`) when true."),
    )
}

fn flag_field() -> Field {
    Field::new("flag", TypeRef::named_nn(TypeRef::STRING), |ctx| {
        FieldFuture::new(async move {
            let code = opt_string(&ctx, "code")?;
            let params = FlagParams::new(
                code.as_deref(),
                opt_int(&ctx, "width")?,
                opt_int(&ctx, "height")?,
                opt_int(&ctx, "quality")?,
                opt_string(&ctx, "output")?.as_deref(),
            )?;
            let mut query = vec![
                ("width", params.width.to_string()),
                ("height", params.height.to_string()),
            ];
            if ctx.args.get("quality").is_some_and(|v| !v.is_null()) {
                query.push(("quality", params.quality.to_string()));
            }
            if let Some(output) = params.output {
                query.push(("output", output.extension().to_string()));
            }
            let url = avatar_url(&ctx, &format!("flags/{}", params.code), &query)?;
            Ok(Some(FieldValue::value(Value::from(url))))
        })
    })
    .description(
        "The URL of a country's flag (`/v1/avatars/flags/{code}`), scaled to cover the size \
         asked for and centred. An unknown country is `INVALID_AVATAR_PARAMETER`.",
    )
    .argument(
        InputValue::new("code", TypeRef::named_nn(TypeRef::STRING))
            .description("The country, ISO 3166-1 alpha-2 (`DE`, `br`), any case."),
    )
    .argument(InputValue::new("width", TypeRef::named(TypeRef::INT)).description(format!(
        "Width in pixels, 1 to {}; {} by default, or 4/3 of the height when only that is given.",
        super::MAX_SIZE,
        flags::DEFAULT_WIDTH
    )))
    .argument(InputValue::new("height", TypeRef::named(TypeRef::INT)).description(format!(
        "Height in pixels, 1 to {}; 3/4 of the width by default.",
        super::MAX_SIZE
    )))
    .argument(InputValue::new("quality", TypeRef::named(TypeRef::INT)).description(format!(
        "JPEG quality, 0 to 100; {} by default (PNG and WebP are lossless).",
        flags::DEFAULT_QUALITY
    )))
    .argument(InputValue::new("output", TypeRef::named(TypeRef::STRING)).description(
        "`png`, `jpg` or `webp`; without it the request's `Accept` header decides (PNG by \
         default).",
    ))
}

/// `browser` or `creditCard`: an icon of `set`.
fn icon_field(name: &str, set: &'static IconSet) -> Field {
    Field::new(name, TypeRef::named_nn(TypeRef::STRING), move |ctx| {
        FieldFuture::new(async move {
            let code = opt_string(&ctx, "code")?;
            let params = IconParams::new(
                set,
                code.as_deref(),
                opt_int(&ctx, "width")?,
                opt_int(&ctx, "height")?,
                opt_int(&ctx, "quality")?,
                opt_string(&ctx, "output")?.as_deref(),
            )?;
            let mut query = vec![
                ("width", params.width.to_string()),
                ("height", params.height.to_string()),
            ];
            if ctx.args.get("quality").is_some_and(|v| !v.is_null()) {
                query.push(("quality", params.quality.to_string()));
            }
            if let Some(output) = params.output {
                query.push(("output", output.extension().to_string()));
            }
            let url = avatar_url(&ctx, &format!("{}/{}", set.path, params.code), &query)?;
            Ok(Some(FieldValue::value(Value::from(url))))
        })
    })
    .description(format!(
        "The URL of a {what} icon (`/v1/avatars/{path}/{{code}}`): the brand's mark, or a \
         neutral badge with its name where no open mark exists, fitted inside the size asked \
         for on a transparent background. An unknown code is `INVALID_AVATAR_PARAMETER`.",
        what = set.kind,
        path = set.path
    ))
    .argument(
        InputValue::new("code", TypeRef::named_nn(TypeRef::STRING)).description(format!(
            "The {}, by Appwrite's code, any case: {}.",
            set.kind,
            set.codes()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    )
    .argument(
        InputValue::new("width", TypeRef::named(TypeRef::INT)).description(format!(
            "Width in pixels, 1 to {}; {} by default, or the height when only that is given.",
            super::MAX_SIZE,
            icons::DEFAULT_SIZE
        )),
    )
    .argument(
        InputValue::new("height", TypeRef::named(TypeRef::INT)).description(format!(
            "Height in pixels, 1 to {}; the width by default.",
            super::MAX_SIZE
        )),
    )
    .argument(
        InputValue::new("quality", TypeRef::named(TypeRef::INT)).description(format!(
            "JPEG quality, 0 to 100; {} by default (PNG and WebP are lossless).",
            icons::DEFAULT_QUALITY
        )),
    )
    .argument(
        InputValue::new("output", TypeRef::named(TypeRef::STRING)).description(
            "`png`, `jpg` or `webp`; without it the request's `Accept` header decides (PNG by \
         default).",
        ),
    )
}

fn initials_field() -> Field {
    Field::new("initials", TypeRef::named_nn(TypeRef::STRING), |ctx| {
        FieldFuture::new(async move {
            let name = match opt_string(&ctx, "name")? {
                Some(name) => Some(name),
                None => caller(&ctx)?.require_session().ok().map(|me| {
                    let user = &me.user;
                    if user.name.trim().is_empty() {
                        user.email.clone().unwrap_or_default()
                    } else {
                        user.name.clone()
                    }
                }),
            };
            let params = InitialsParams::new(
                name.as_deref(),
                opt_int(&ctx, "width")?,
                opt_int(&ctx, "height")?,
                opt_string(&ctx, "background")?.as_deref(),
                opt_string(&ctx, "output")?.as_deref(),
            )?;
            // The URL names the initials (a word each) and colour, not the name: it
            // says no more about the user than the image does.
            let words: Vec<&str> = params.initials.graphemes(true).collect();
            let mut query = vec![
                ("name", words.join(" ")),
                ("width", params.width.to_string()),
                ("height", params.height.to_string()),
                ("background", params.background_hex()),
            ];
            if let Some(output) = params.output {
                query.push(("output", output.extension().to_string()));
            }
            let url = avatar_url(&ctx, "initials", &query)?;
            Ok(Some(FieldValue::value(Value::from(url))))
        })
    })
    .description(
        "The URL of the initials of a name (`/v1/avatars/initials`): the first letter of its \
         first two words on a colour of its own. Raster formats draw Latin, Greek and \
         Cyrillic letters; SVG leaves the letters to the viewer's fonts.",
    )
    .argument(
        InputValue::new("name", TypeRef::named(TypeRef::STRING)).description(format!(
            "At most {} characters, no control characters; the signed-in user's name (else \
         email) when absent.",
            initials::MAX_NAME_CHARS
        )),
    )
    .argument(
        InputValue::new("width", TypeRef::named(TypeRef::INT)).description(format!(
            "Width in pixels, 1 to {}; {} by default, or the height when only that is given.",
            super::MAX_SIZE,
            initials::DEFAULT_SIZE
        )),
    )
    .argument(
        InputValue::new("height", TypeRef::named(TypeRef::INT)).description(format!(
            "Height in pixels, 1 to {}; the width by default.",
            super::MAX_SIZE
        )),
    )
    .argument(
        InputValue::new("background", TypeRef::named(TypeRef::STRING))
            .description("Six hex digits (`1e88e5`); by default a colour picked from the name."),
    )
    .argument(
        InputValue::new("output", TypeRef::named(TypeRef::STRING)).description(
            "`png`, `svg`, `jpg` or `webp`; without it the request's `Accept` header decides (PNG \
         by default).",
        ),
    )
}

/// `image` (a remote image) or `favicon` (the icon of a remote page).
fn remote_field(kind: &'static str) -> Field {
    let (about, url_about) = if kind == "image" {
        (
            "The URL of a remote image through the image proxy (`/v1/avatars/image`), redrawn \
             at the size asked for. The proxy reaches only public addresses; the README lists \
             its limits.",
            "An http or https URL of a PNG, JPEG, GIF, WebP or ICO image.",
        )
    } else {
        (
            "The URL of the icon of a web page (`/v1/avatars/favicon`): the one its \
             `<link rel=\"icon\">` names, else `/favicon.ico`, redrawn at the size asked for. \
             Fetched like `image`.",
            "An http or https URL of a web page.",
        )
    };
    Field::new(kind, TypeRef::named_nn(TypeRef::STRING), move |ctx| {
        FieldFuture::new(async move {
            let url = opt_string(&ctx, "url")?.unwrap_or_default();
            // The form only: where the URL points is checked when it is fetched,
            // at every hop, since a name may resolve differently by then.
            let url = super::remote::check_url(&url)?;
            let mut query = vec![("url", url.to_string())];
            for name in ["width", "height"] {
                if let Some(n) = opt_int(&ctx, name)? {
                    if !(0..=i64::from(super::MAX_SIZE)).contains(&n) {
                        return Err(invalid(
                            name,
                            format!("must be 0 to {} pixels", super::MAX_SIZE),
                        )
                        .into());
                    }
                    query.push((name, n.to_string()));
                }
            }
            if let Some(output) = opt_string(&ctx, "output")? {
                let output = super::output::Output::named(&output, super::remote::OUTPUTS)?;
                query.push(("output", output.extension().to_string()));
            }
            let url = avatar_url(&ctx, kind, &query)?;
            Ok(Some(FieldValue::value(Value::from(url))))
        })
    })
    .description(about)
    .argument(InputValue::new("url", TypeRef::named_nn(TypeRef::STRING)).description(url_about))
    .argument(
        InputValue::new("width", TypeRef::named(TypeRef::INT)).description(format!(
            "Width in pixels, 0 (the image's own) to {}.",
            super::MAX_SIZE
        )),
    )
    .argument(
        InputValue::new("height", TypeRef::named(TypeRef::INT)).description(format!(
            "Height in pixels, 0 (the image's own) to {}.",
            super::MAX_SIZE
        )),
    )
    .argument(
        InputValue::new("output", TypeRef::named(TypeRef::STRING))
            .description("`png`, `jpg` or `webp`; the image's own format by default."),
    )
}
