//! The integration suite: real servers on free ports, driven over HTTP and
//! WebSocket like a client app. Runs on SQLite + in-process bus by default, and on
//! MariaDB + Redis when `NIMBUS_TEST_DATABASE_URL` / `NIMBUS_TEST_REDIS_URL` are set.

mod helpers;

mod account_events;
mod avatars;
mod avatars_remote;
mod cli;
mod console;
mod console_auth;
mod databases;
mod email_flows;
mod event_log;
mod fanout;
mod function_limits;
mod function_triggers;
mod functions;
mod grants;
mod identity;
mod jobs;
mod jobs_faults;
mod lean_paths;
mod limits;
mod locale;
mod log_consumers;
mod oauth2;
mod oauth2_private;
mod oauth_provider;
mod observability;
mod owner_lists;
mod projects;
mod realtime;
mod realtime_recovery;
mod resolved_query;
mod schema;
mod security_accounts;
mod security_documents;
mod security_invitations;
mod security_limits;
mod security_load;
mod security_probes;
mod security_realtime;
mod security_resources;
mod security_sockets;
mod security_uploads;
mod smtp_server;
mod statements;
mod storage;
mod teams;
mod transport;
mod uploads_fast;
mod usage;
mod user_mfa_reset;
mod webhooks;
