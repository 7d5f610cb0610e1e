//! Role bindings: `requester`, `approver`, `admin` and `auditor` held by a
//! group or a user, on resources and environments chosen by globs.
//!
//! Bindings add to the built-in groups (`Settings::admin_group`,
//! `auditor_group`, `approver_group`); they never take anything away. They do
//! not touch segregation of duties: an approver binding makes someone eligible
//! to decide other people's reviews, never their own (see `reviews`).
//!
//! Bindings come from the API (`created_by` = the caller) or from the active
//! policy's `[[binding]]` sections (`created_by` = `policy:<version>`);
//! applying a policy replaces the policy-made ones and leaves the others.
//!
//! A `requester` binding covering a resource is what lets someone request a
//! grant on it (see [`crate::grants`]).

use crate::service::{
    ControlPlane, Principal, ServiceError, validate_identity_name, validate_name,
};
use crate::store::identities::Identity;
use crate::store::role_bindings::{RoleBinding, RoleBindingSpec};
use countersign_policy::Glob;

/// A role a binding grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Requester,
    Approver,
    Admin,
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requester => "requester",
            Self::Approver => "approver",
            Self::Admin => "admin",
            Self::Auditor => "auditor",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Requester, Self::Approver, Self::Admin, Self::Auditor]
            .into_iter()
            .find(|r| r.as_str() == name)
    }
}

/// Checks a binding's role, member and globs.
pub fn validate_binding(spec: &RoleBindingSpec) -> Result<(), ServiceError> {
    if Role::from_name(&spec.role).is_none() {
        return Err(ServiceError::Invalid(format!(
            "unknown role {:?} (valid: requester, approver, admin, auditor)",
            spec.role
        )));
    }
    match spec.member.split_once(':') {
        Some(("group", name)) => validate_name("group", name)?,
        Some(("user", email)) if email.contains('@') => validate_identity_name(email)?,
        _ => {
            return Err(ServiceError::Invalid(format!(
                "bad member {:?} (expected \"group:NAME\" or \"user:EMAIL\")",
                spec.member
            )));
        }
    }
    for (field, list) in [
        ("resources", &spec.resources),
        ("environments", &spec.environments),
    ] {
        for pattern in list {
            Glob::new(pattern).map_err(|why| {
                ServiceError::Invalid(format!("bad pattern {pattern:?} in `{field}`: {why}"))
            })?;
        }
    }
    Ok(())
}

/// Whether `binding` names this identity.
fn names(binding: &RoleBinding, email: &str, groups: &[String]) -> bool {
    match binding.member.split_once(':') {
        Some(("group", g)) => groups.iter().any(|x| x == g),
        Some(("user", u)) => u.eq_ignore_ascii_case(email),
        _ => false,
    }
}

/// Whether `value` is in scope of `globs` (empty = any). `None` asks about
/// any scope at all, so every binding's scope counts.
fn in_scope(globs: &[String], value: Option<&str>) -> bool {
    let Some(value) = value else {
        return true;
    };
    globs.is_empty()
        || globs
            .iter()
            .any(|g| Glob::new(g).is_ok_and(|g| g.matches(value)))
}

impl ControlPlane {
    pub async fn create_binding(
        &self,
        spec: &RoleBindingSpec,
        created_by: &str,
    ) -> Result<RoleBinding, ServiceError> {
        validate_binding(spec)?;
        Ok(self.store().insert_role_binding(spec, created_by).await?)
    }

    pub async fn list_bindings(&self) -> Result<Vec<RoleBinding>, ServiceError> {
        Ok(self.store().role_bindings().await?)
    }

    /// Deletes a binding; `false` if there was none.
    pub async fn delete_binding(&self, id: &str) -> Result<bool, ServiceError> {
        Ok(self.store().delete_role_binding(id).await?)
    }

    /// Whether `email` with `groups` holds `role` through a binding whose
    /// scope covers `resource` and `environment` (`None`: any scope).
    pub async fn has_role_for(
        &self,
        email: &str,
        groups: &[String],
        role: Role,
        resource: Option<&str>,
        environment: Option<&str>,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .store()
            .role_bindings_for(role.as_str())
            .await?
            .iter()
            .any(|b| {
                names(b, email, groups)
                    && in_scope(&b.resources, resource)
                    && in_scope(&b.environments, environment)
            }))
    }

    /// [`ControlPlane::has_role_for`] for an API caller. The bootstrap token
    /// holds no bindings (it passes admin checks on its own).
    pub async fn has_role(
        &self,
        p: &Principal,
        role: Role,
        resource: Option<&str>,
        environment: Option<&str>,
    ) -> Result<bool, ServiceError> {
        match p {
            Principal::Bootstrap => Ok(false),
            Principal::Identity { identity, .. } => {
                self.identity_has_role(identity, role, resource, environment)
                    .await
            }
        }
    }

    pub(crate) async fn identity_has_role(
        &self,
        identity: &Identity,
        role: Role,
        resource: Option<&str>,
        environment: Option<&str>,
    ) -> Result<bool, ServiceError> {
        self.has_role_for(
            &identity.email,
            &identity.groups,
            role,
            resource,
            environment,
        )
        .await
    }

    /// Replaces the bindings earlier policies declared with `wanted`, made by
    /// policy `version`.
    pub(crate) async fn sync_policy_bindings(
        &self,
        wanted: &[RoleBindingSpec],
        version: u64,
    ) -> Result<(), ServiceError> {
        let by = format!(
            "{}{version}",
            crate::store::role_bindings::POLICY_CREATOR_PREFIX
        );
        Ok(self.store().sync_policy_bindings(wanted, &by).await?)
    }
}

/// One binding per member of each `[[binding]]` in `policy`, checked.
pub(crate) fn policy_bindings(
    policy: &countersign_policy::Policy,
) -> Result<Vec<RoleBindingSpec>, ServiceError> {
    let mut wanted = Vec::new();
    for b in policy.bindings() {
        for member in &b.members {
            let spec = RoleBindingSpec {
                role: b.role.clone(),
                member: member.clone(),
                resources: b.resources.clone(),
                environments: b.environments.clone(),
            };
            validate_binding(&spec).map_err(|e| ServiceError::InvalidPolicy(e.to_string()))?;
            wanted.push(spec);
        }
    }
    Ok(wanted)
}
