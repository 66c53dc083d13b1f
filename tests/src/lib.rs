//! Test support for kubesink's end-to-end tests: real services started on
//! demand (MariaDB, PostgreSQL, a Kafka broker, the control plane, the SLS emulator), guest components
//! built on demand, and fixtures.

pub mod binary;
pub mod cluster;
pub mod guests;
pub mod id_cursor;
pub mod kafka;
pub mod kubedl;
pub mod kustomize;
pub mod mariadb;
pub mod postgres;
pub mod records;
pub mod sls;
pub mod wait;
