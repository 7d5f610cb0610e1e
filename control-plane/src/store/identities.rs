//! People and service accounts, and the groups they belong to.

use super::entity::{identity, identity_group};
use super::{Store, StoreError, conflict_or};
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, TransactionTrait,
};
use serde::Serialize;

/// Whether an identity is a person or a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    User,
    Service,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Service => "service",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "user" => Ok(Self::User),
            "service" => Ok(Self::Service),
            other => Err(StoreError::Corrupt(format!("identity kind {other:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Identity {
    pub id: String,
    /// The login name: an email for people, a name for service accounts.
    pub email: String,
    pub kind: IdentityKind,
    pub display_name: Option<String>,
    pub disabled: bool,
    pub groups: Vec<String>,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Creates an identity with its groups. Fails with `Conflict` if the name is taken.
    pub async fn create_identity(
        &self,
        email: &str,
        kind: IdentityKind,
        display_name: Option<&str>,
        groups: &[String],
    ) -> Result<Identity, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let created_at = Utc::now();
        let txn = self.db().begin().await?;
        identity::Entity::insert(identity::ActiveModel {
            id: Set(id.clone()),
            email: Set(email.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            display_name: Set(display_name.map(str::to_owned)),
            disabled: Set(false),
            created_at: Set(created_at),
        })
        .exec_without_returning(&txn)
        .await
        .map_err(|e| conflict_or(e, "identity", email))?;
        insert_groups(&txn, &id, groups).await?;
        txn.commit().await?;
        self.identity_by_id(&id).await?.ok_or(StoreError::NotFound {
            what: "identity",
            key: id,
        })
    }

    /// Returns the user `email`, creating it (with no groups) if it does not exist.
    pub async fn ensure_user(&self, email: &str) -> Result<Identity, StoreError> {
        if let Some(found) = self.identity_by_email(email).await? {
            return Ok(found);
        }
        match self
            .create_identity(email, IdentityKind::User, None, &[])
            .await
        {
            // Lost a race with another creator: theirs is as good as ours.
            Err(StoreError::Conflict { .. }) => {
                self.identity_by_email(email)
                    .await?
                    .ok_or(StoreError::NotFound {
                        what: "identity",
                        key: email.to_owned(),
                    })
            }
            other => other,
        }
    }

    pub async fn identity_by_email(&self, email: &str) -> Result<Option<Identity>, StoreError> {
        let found = identity::Entity::find()
            .filter(identity::Column::Email.eq(email))
            .one(self.db())
            .await?;
        match found {
            Some(model) => Ok(Some(self.with_groups(model).await?)),
            None => Ok(None),
        }
    }

    pub async fn identity_by_id(&self, id: &str) -> Result<Option<Identity>, StoreError> {
        match identity::Entity::find_by_id(id).one(self.db()).await? {
            Some(model) => Ok(Some(self.with_groups(model).await?)),
            None => Ok(None),
        }
    }

    pub async fn list_identities(&self) -> Result<Vec<Identity>, StoreError> {
        let models = identity::Entity::find()
            .order_by_asc(identity::Column::Email)
            .all(self.db())
            .await?;
        let mut out = Vec::with_capacity(models.len());
        for model in models {
            out.push(self.with_groups(model).await?);
        }
        Ok(out)
    }

    /// Disables or re-enables an identity. A disabled identity's tokens stop
    /// authenticating and its credentials are no longer exchanged.
    pub async fn set_disabled(&self, identity_id: &str, disabled: bool) -> Result<(), StoreError> {
        let res = identity::Entity::update_many()
            .col_expr(
                identity::Column::Disabled,
                sea_orm::sea_query::Expr::value(disabled),
            )
            .filter(identity::Column::Id.eq(identity_id))
            .exec(self.db())
            .await?;
        if res.rows_affected == 0 {
            return Err(StoreError::NotFound {
                what: "identity",
                key: identity_id.to_owned(),
            });
        }
        Ok(())
    }

    /// Replaces the identity's groups.
    pub async fn set_groups(&self, identity_id: &str, groups: &[String]) -> Result<(), StoreError> {
        let txn = self.db().begin().await?;
        identity_group::Entity::delete_many()
            .filter(identity_group::Column::IdentityId.eq(identity_id))
            .exec(&txn)
            .await?;
        insert_groups(&txn, identity_id, groups).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn with_groups(&self, model: identity::Model) -> Result<Identity, StoreError> {
        let groups = identity_group::Entity::find()
            .filter(identity_group::Column::IdentityId.eq(model.id.as_str()))
            .order_by_asc(identity_group::Column::GroupName)
            .all(self.db())
            .await?
            .into_iter()
            .map(|g| g.group_name)
            .collect();
        Ok(Identity {
            kind: IdentityKind::parse(&model.kind)?,
            id: model.id,
            email: model.email,
            display_name: model.display_name,
            disabled: model.disabled,
            groups,
            created_at: model.created_at,
        })
    }
}

async fn insert_groups(
    txn: &sea_orm::DatabaseTransaction,
    identity_id: &str,
    groups: &[String],
) -> Result<(), StoreError> {
    let mut unique: Vec<&String> = groups.iter().collect();
    unique.sort();
    unique.dedup();
    if unique.is_empty() {
        return Ok(());
    }
    identity_group::Entity::insert_many(unique.into_iter().map(|g| identity_group::ActiveModel {
        identity_id: Set(identity_id.to_owned()),
        group_name: Set(g.clone()),
    }))
    .exec_without_returning(txn)
    .await?;
    Ok(())
}
