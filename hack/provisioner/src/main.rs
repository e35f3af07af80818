//! `clawdbot-local-provisioner --kubeconfig K --node N --root DIR`: started by
//! `hack/dev-env.sh up` beside the kubelet. Two watches (claims, volumes); each event is
//! handled on its own, and a failed one is retried on the watch's next relist.

use std::path::{Path, PathBuf};

use clap::Parser;
use clawdbot_local_provisioner::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};

#[derive(Parser, Debug)]
struct Cli {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// This node's name (the scheduler's `selected-node` on the claims to serve).
    #[arg(long)]
    node: String,
    /// Where the volumes' directories are made.
    #[arg(long)]
    root: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let kubeconfig = Kubeconfig::read_from(&cli.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    std::fs::create_dir_all(&cli.root).map_err(|source| Error::Io {
        path: cli.root.clone(),
        source,
    })?;
    let claims = {
        let (client, node, root) = (client.clone(), cli.node.clone(), cli.root.clone());
        async move {
            let mut events = watcher(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                Default::default(),
            )
            .default_backoff()
            .applied_objects()
            .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(pvc) if wants_volume(&pvc, &node) => {
                        if let Err(e) = provision(&client, &pvc, &node, &root).await {
                            tracing::warn!(claim = %pvc.name_any(), error = %e, "provisioning failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "claim watch error (retrying)"),
                }
            }
        }
    };
    let volumes = {
        let (client, root) = (client.clone(), cli.root.clone());
        async move {
            let mut events = watcher(
                Api::<PersistentVolume>::all(client.clone()),
                Default::default(),
            )
            .default_backoff()
            .applied_objects()
            .boxed();
            while let Some(event) = events.next().await {
                match event {
                    Ok(pv) if should_delete(&pv) => {
                        if let Err(e) = delete(&client, &pv, &root).await {
                            tracing::warn!(volume = %pv.name_any(), error = %e, "deletion failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "volume watch error (retrying)"),
                }
            }
        }
    };
    tokio::join!(claims, volumes);
    Ok(())
}

async fn provision(
    client: &Client,
    pvc: &PersistentVolumeClaim,
    node: &str,
    root: &Path,
) -> Result<()> {
    let class_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let class = Api::<StorageClass>::all(client.clone())
        .get(&class_name)
        .await?;
    let dir = volume_dir(root, pvc);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let pv = build_volume(pvc, &class, node, &dir);
    match Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
    {
        Ok(_) => {
            tracing::info!(claim = %format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any()),
                dir = %dir.display(), "provisioned");
            Ok(())
        }
        // Made on an earlier event; the PV controller binds it.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete(client: &Client, pv: &PersistentVolume, root: &Path) -> Result<()> {
    if let Some(dir) = owned_dir(pv, root) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path: dir, source }),
        }
    }
    match Api::<PersistentVolume>::all(client.clone())
        .delete(&pv.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => {
            tracing::info!(volume = %pv.name_any(), "deleted (reclaim policy Delete)");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
