//! Raw images, kept only when a caller asks (`?store_image=true`) and only when the deployment
//! has a store (`--images DIR`; off by default): a local folder through the `object_store`
//! crate, so S3 or GCS are a change of configuration. Images are sealed under the deployment
//! key (subject and face id as associated data) like the templates, and go with their face or
//! subject.

use std::sync::Arc;

use futures_lite::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use uniface::core::crypto::Key;

use crate::upstream::hex;
use crate::{db, Error, Result};

const PURPOSE: &str = "uniface.services.image";

/// Where images live.
#[derive(Debug, Clone)]
pub struct Images {
    store: Arc<dyn ObjectStore>,
}

fn store_error(e: object_store::Error) -> Error {
    Error::Invalid(format!("image store: {e}"))
}

/// A subject's folder: its id in hex (any UTF-8 id is a safe path).
fn folder(subject: &str) -> Path {
    Path::from(hex(subject.as_bytes()))
}

fn location(subject: &str, face_id: i64) -> Path {
    Path::from(format!("{}/{face_id}", hex(subject.as_bytes())))
}

impl Images {
    /// A local folder (made if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Uniface(uniface::Error::io(dir, e)))?;
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(store_error)?;
        Ok(Self {
            store: Arc::new(store),
        })
    }

    /// Keep the image of a face, sealed.
    pub async fn put(&self, key: &Key, subject: &str, face_id: i64, image: &[u8]) -> Result<()> {
        let sealed =
            uniface::core::crypto::seal(key, PURPOSE, &db::face_aad(subject, face_id), image)?;
        self.store
            .put(&location(subject, face_id), PutPayload::from(sealed))
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// The image of a face, opened (`None` when none was kept).
    pub async fn get(&self, key: &Key, subject: &str, face_id: i64) -> Result<Option<Vec<u8>>> {
        let sealed = match self.store.get(&location(subject, face_id)).await {
            Ok(r) => r.bytes().await.map_err(store_error)?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error(e)),
        };
        let image =
            uniface::core::crypto::open(key, PURPOSE, &db::face_aad(subject, face_id), &sealed)?;
        Ok(Some(image.to_vec()))
    }

    /// Delete the image of a face (nothing when none was kept).
    pub async fn delete(&self, subject: &str, face_id: i64) -> Result<()> {
        match self.store.delete(&location(subject, face_id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Delete every image of a subject; how many went.
    pub async fn delete_subject(&self, subject: &str) -> Result<usize> {
        let prefix = folder(subject);
        let mut listed = self.store.list(Some(&prefix));
        let mut gone = Vec::new();
        while let Some(meta) = listed.next().await {
            gone.push(meta.map_err(store_error)?.location);
        }
        for p in &gone {
            match self.store.delete(p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error(e)),
            }
        }
        Ok(gone.len())
    }
}
