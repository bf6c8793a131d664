//! GraphQL of transactions of document writes (Appwrite's transactions API):
//! `createTransaction`, `transaction`, `transactions`, `createOperations`,
//! `updateTransaction` (commit or roll back) and `deleteTransaction`; the
//! document mutations' `transactionId` stages through [`stage_one`].

use async_graphql::Value;
use async_graphql::dynamic::{Field, FieldFuture, FieldValue, InputValue, Object, TypeRef};

use crate::error::{AppError, AppResult, codes};
use crate::graphql::SchemaParts;
use crate::graphql::types::{app, caller, datetime, input, object, opt_string, prop};

use super::appwrite_query::parse_query_strings;
use super::schema::{data_model, request_tx};
use super::transactions::{self, Applied, Transaction};

/// The most transactions one page lists.
const MAX_PAGE: u32 = 100;

pub fn register(parts: &mut SchemaParts) {
    parts.add_type(
        Object::new("Transaction")
            .description("Document writes staged together, applied at once when committed (Appwrite's transactions).")
            .field(prop("id", TypeRef::named_nn(TypeRef::ID), "Unique id."))
            .field(prop(
                "status",
                TypeRef::named_nn(TypeRef::STRING),
                "`pending` (taking operations), `committed`, or `failed`: rolled back, or its commit refused, nothing of it kept (as Appwrite answers both).",
            ))
            .field(prop(
                "operations",
                TypeRef::named_nn(TypeRef::INT),
                "How many operations it holds (at most 100).",
            ))
            .field(prop("createdAt", TypeRef::named_nn("DateTime"), "When it was opened."))
            .field(prop("updatedAt", TypeRef::named_nn("DateTime"), "When it last changed."))
            .field(prop(
                "expiresAt",
                TypeRef::named_nn("DateTime"),
                "When it stops taking operations, a commit or a rollback; it is deleted after.",
            )),
    );
    parts.add_type(
        Object::new("TransactionList")
            .description("A page of transactions.")
            .field(prop(
                "total",
                TypeRef::named_nn(TypeRef::INT),
                "How many there are in all.",
            ))
            .field(prop(
                "transactions",
                TypeRef::named_nn_list_nn("Transaction"),
                "This page, newest first.",
            )),
    );
    parts.add_type(
        Object::new("DeleteTransactionPayload")
            .description("The result of `deleteTransaction`.")
            .field(prop(
                "deletedId",
                TypeRef::named_nn(TypeRef::ID),
                "Id of what was deleted.",
            )),
    );
    parts.add_input::<CreateTransactionInput>();
    parts.add_input::<CreateOperationsInput>();
    parts.add_input::<UpdateTransactionInput>();
    parts.add_input::<DeleteTransactionInput>();
    parts.query(transaction_field());
    parts.query(transactions_field());
    parts.mutation(create_transaction_field());
    parts.mutation(create_operations_field());
    parts.mutation(update_transaction_field());
    parts.mutation(delete_transaction_field());
}

fn transaction_value(transaction: &Transaction) -> Value {
    object([
        ("id", Value::from(transaction.id.as_str())),
        ("status", Value::from(transaction.status.answered())),
        ("operations", Value::from(transaction.operations)),
        ("createdAt", datetime(transaction.created_at)),
        ("updatedAt", datetime(transaction.updated_at)),
        ("expiresAt", datetime(transaction.expires_at)),
    ])
}

fn answer(transaction: &Transaction) -> Option<FieldValue<'static>> {
    Some(FieldValue::value(transaction_value(transaction)))
}

/// An operation in Appwrite's shape, as a document mutation given
/// `transactionId` stages it: `operation(action, database, collection)`, then
/// its document and its data.
pub(super) struct Operation(serde_json::Map<String, serde_json::Value>);

pub(super) fn operation(action: &str, database_id: String, collection_id: String) -> Operation {
    let mut fields = serde_json::Map::new();
    fields.insert("action".into(), action.into());
    fields.insert("databaseId".into(), database_id.into());
    fields.insert("collectionId".into(), collection_id.into());
    Operation(fields)
}

impl Operation {
    /// The document it writes (none: an id is made when it is staged).
    pub(super) fn document(mut self, id: Option<String>) -> Self {
        self.0.insert("documentId".into(), id.into());
        self
    }

    /// Its `data` and `permissions`.
    pub(super) fn data(
        mut self,
        data: serde_json::Value,
        permissions: Option<Vec<String>>,
    ) -> Self {
        self.0.insert("data".into(), data);
        self.0.insert("permissions".into(), permissions.into());
        self
    }
}

/// Stages `operation` in transaction `id` instead of running it: what a
/// document mutation given `transactionId` does. Answers what the operation did
/// when it ran to be checked.
pub(super) async fn stage_one(
    ctx: &async_graphql::dynamic::ResolverContext<'_>,
    id: &str,
    operation: Operation,
) -> AppResult<Applied> {
    let operation = serde_json::Value::Object(operation.0);
    let (_, mut applied) = transactions::stage(
        app(ctx)?,
        caller(ctx)?,
        request_tx(ctx)?,
        data_model(ctx)?,
        id,
        vec![operation],
        false,
    )
    .await?;
    applied
        .pop()
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("a staged operation did not run")))
}

fn transaction_field() -> Field {
    Field::new("transaction", TypeRef::named_nn("Transaction"), |ctx| {
        FieldFuture::new(async move {
            let id = opt_string(&ctx, "id")?.unwrap_or_default();
            let transaction = transactions::get(app(&ctx)?, caller(&ctx)?, &id).await?;
            Ok(answer(&transaction))
        })
    })
    .description(
        "A transaction: a user's own, or any of the project's for a key (`documents.write`).",
    )
    .argument(InputValue::new("id", TypeRef::named_nn(TypeRef::ID)))
}

fn transactions_field() -> Field {
    Field::new("transactions", TypeRef::named_nn("TransactionList"), |ctx| {
        FieldFuture::new(async move {
            let queries: Vec<String> = match ctx.args.get("queries") {
                Some(value) => value.deserialize().map_err(|_| {
                    AppError::invalid("queries", "expected a list of query strings")
                })?,
                None => Vec::new(),
            };
            let parsed = parse_query_strings(&queries).map_err(|err| AppError::Invalid {
                code: err.code(),
                field: "queries".into(),
                reason: err.to_string(),
            })?;
            let Some((limit, offset)) = page_of(&parsed) else {
                return Err(AppError::Invalid {
                    code: codes::QUERY_INVALID,
                    field: "queries".into(),
                    reason: "transactions take `limit` and `offset` queries only".into(),
                }
                .into());
            };
            let (list, total) = transactions::list(
                app(&ctx)?,
                caller(&ctx)?,
                limit as usize,
                offset as usize,
            )
            .await?;
            Ok(Some(FieldValue::value(object([
                ("total", Value::from(total)),
                (
                    "transactions",
                    Value::List(list.iter().map(transaction_value).collect()),
                ),
            ]))))
        })
    })
    .description("The caller's transactions (a key's: the project's), newest first; Appwrite's `limit` and `offset` queries page them (at most 100 a page, 25 by default).")
    .argument(InputValue::new("queries", TypeRef::named_nn_list(TypeRef::STRING)))
}

/// The page `limit` and `offset` queries ask for; `None` when the queries
/// hold anything else.
fn page_of(parsed: &super::appwrite_query::ParsedQueries) -> Option<(u32, u32)> {
    let only_paging = parsed.select.is_none()
        && parsed.orders.is_empty()
        && parsed.cursor_after.is_none()
        && parsed.cursor_before.is_none()
        && matches!(&parsed.filter, super::filter::Filter::And(all) if all.is_empty());
    only_paging.then(|| {
        (
            parsed.limit.unwrap_or(25).min(MAX_PAGE),
            parsed.offset.unwrap_or(0),
        )
    })
}

crate::graphql_input! {
    "A transaction to open."
    struct CreateTransactionInput {
        "How long it stays open, in seconds: 60 to 3600 (default 300)."
        ttl: Option<i64> as "Int",
    }
}

fn create_transaction_field() -> Field {
    Field::new("createTransaction", TypeRef::named_nn("Transaction"), |ctx| {
        FieldFuture::new(async move {
            let ttl = match ctx.args.get("input") {
                Some(given) if !given.is_null() => input::<CreateTransactionInput>(&ctx)?.ttl,
                _ => None,
            };
            let transaction =
                transactions::create(app(&ctx)?, caller(&ctx)?, request_tx(&ctx)?, ttl).await?;
            Ok(answer(&transaction))
        })
    })
    .description("Opens a transaction: document writes staged in it (`createOperations`, or `transactionId` on a document mutation) are applied together when it is committed (`updateTransaction`). A signed-in user's is its own; a key's, any key's of the project.")
    .argument(InputValue::new("input", TypeRef::named("CreateTransactionInput")))
}

crate::graphql_input! {
    "Operations to stage in a transaction."
    struct CreateOperationsInput {
        "The transaction."
        transaction_id: String as "ID",
        "Appwrite's operations: each `{action, databaseId, collectionId, documentId, data}`, `action` one of create, update, upsert, delete, increment (`data`: `attribute`, `value`, `max`), decrement (`min`), bulkCreate and bulkUpsert (`data`: the documents), bulkUpdate (`data`: `queries` and `data`) and bulkDelete (`data`: `queries`)."
        operations: Vec<serde_json::Value>,
    }
}

fn create_operations_field() -> Field {
    Field::new("createOperations", TypeRef::named_nn("Transaction"), |ctx| {
        FieldFuture::new(async move {
            let input: CreateOperationsInput = input(&ctx)?;
            let (transaction, _) = transactions::stage(
                app(&ctx)?,
                caller(&ctx)?,
                request_tx(&ctx)?,
                data_model(&ctx)?,
                &input.transaction_id,
                input.operations,
                true,
            )
            .await?;
            Ok(answer(&transaction))
        })
    })
    .description("Stages operations in a pending transaction, as Appwrite's staging checks them: each operation's form, the documents it names and the caller's permissions refuse it now (each refusal the operation's own: `operations[2].data`, …); what the data makes of it (a value, a unique index, an id taken, a related document) refuses the commit instead. At most 100 in a transaction (`TRANSACTION_LIMIT_EXCEEDED`).")
    .argument(CreateOperationsInput::argument())
}

crate::graphql_input! {
    "What to do with a pending transaction."
    struct UpdateTransactionInput {
        "The transaction."
        id: String as "ID",
        "Apply its operations, all or none."
        commit: Option<bool>,
        "Drop its operations."
        rollback: Option<bool>,
    }
}

fn update_transaction_field() -> Field {
    Field::new("updateTransaction", TypeRef::named_nn("Transaction"), |ctx| {
        FieldFuture::new(async move {
            let input: UpdateTransactionInput = input(&ctx)?;
            let (state, caller) = (app(&ctx)?, caller(&ctx)?);
            let transaction = match (input.commit.unwrap_or(false), input.rollback.unwrap_or(false)) {
                (true, false) => {
                    transactions::commit(
                        state,
                        caller,
                        request_tx(&ctx)?,
                        data_model(&ctx)?,
                        &input.id,
                    )
                    .await?
                }
                (false, true) => {
                    transactions::roll_back(state, caller, request_tx(&ctx)?, &input.id).await?
                }
                _ => {
                    return Err(AppError::invalid(
                        "commit",
                        "give `commit: true` or `rollback: true`, one of them",
                    )
                    .into());
                }
            };
            Ok(answer(&transaction))
        })
    })
    .description("Commits a pending transaction (its operations applied as the caller, all or none, in their order; a refused one marks it `failed`), or rolls it back. A transaction is committed or rolled back once (`TRANSACTION_NOT_READY` after).")
    .argument(UpdateTransactionInput::argument())
}

crate::graphql_input! {
    "The transaction to delete."
    struct DeleteTransactionInput {
        "The transaction."
        id: String as "ID",
    }
}

fn delete_transaction_field() -> Field {
    Field::new(
        "deleteTransaction",
        TypeRef::named_nn("DeleteTransactionPayload"),
        |ctx| {
            FieldFuture::new(async move {
                let input: DeleteTransactionInput = input(&ctx)?;
                transactions::delete(app(&ctx)?, caller(&ctx)?, request_tx(&ctx)?, &input.id)
                    .await?;
                Ok(Some(FieldValue::value(object([(
                    "deletedId",
                    Value::from(input.id),
                )]))))
            })
        },
    )
    .description("Deletes a transaction; a pending one's operations never run.")
    .argument(DeleteTransactionInput::argument())
}
