//! The Kubernetes deployment (deploy/kubernetes): the rendered kustomizations read as the
//! Kubernetes API types and checked against the agent (`manifests`), and the agent run under
//! exactly the DaemonSet's capabilities on the ConfigMap's config (`agent`).

mod agent;
mod manifests;
mod render;
