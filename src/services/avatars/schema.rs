//! GraphQL of the avatars service: the root field `avatars`, whose fields check
//! their arguments as the image endpoints do and answer the URL that serves the
//! image, so a bad parameter fails here rather than in an `<img>`. Public.

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};

use crate::AppState;
use crate::error::AppResult;
use crate::graphql::SchemaParts;
use crate::graphql::types::{app, object, opt_string};
use crate::services::projects::Project;

use super::invalid;
use super::qr::{self, QrParams};

pub fn register(parts: &mut SchemaParts, _project: &Project) {
    parts.add_type(avatars_type());
    parts.query(avatars());
}

fn avatars() -> Field {
    Field::new("avatars", TypeRef::named_nn("Avatars"), |_| {
        FieldFuture::from_value(Some(object([])))
    })
    .description("URLs of generated images (QR codes). Public.")
}

fn avatars_type() -> Object {
    Object::new("Avatars")
        .description(
            "Generated images, each served at a URL under `/v1/avatars/`. A field checks its \
             arguments and answers the URL; the image is made when the URL is fetched.",
        )
        .field(qr_field())
}

/// The URL of the avatar endpoint `kind` with `query`, absolute when
/// `NIMBUS_PUBLIC_URL` is set.
fn avatar_url(state: &AppState, kind: &str, query: &[(&str, String)]) -> String {
    let base = state
        .config
        .public_url
        .as_deref()
        .unwrap_or("")
        .trim_end_matches('/');
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(query)
        .finish()
        .replace('+', "%20");
    format!("{base}/v1/avatars/{kind}?{query}")
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
            let url = avatar_url(app(&ctx)?, "qr", &query);
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
            super::MAX_SIZE,
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
            "`png` or `svg`; without it the request's `Accept` header decides (PNG by default).",
        ),
    )
    .argument(
        InputValue::new("download", TypeRef::named(TypeRef::BOOLEAN))
            .description("Served as an attachment (`Content-Disposition`) when true."),
    )
}
