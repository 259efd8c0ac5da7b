//! # uniface-services
//!
//! The reference deployment of UniFace (issue 17): the services a face-biometrics host runs —
//! gateway, enrollment, verification, identification, template management, outbox relay — over
//! PostgreSQL, RabbitMQ and the gallery, as one binary whose roles are chosen by flag.
//!
//! Built so far: the relational store ([`db`]): versioned migrations and the enrollment
//! transaction that writes the subject, the face (its template sealed under the deployment's
//! key, never in the clear) and the outbox event together. `stack.sh` runs the servers.

pub mod db;
