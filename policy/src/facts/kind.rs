//! Statement kinds: the coarse verb of a statement, as policy rules name it.
//!
//! The mapping from PostgreSQL's ~110 statement node types to these kinds is an exhaustive-ish
//! `match`; node types without a natural home land in [`StatementKind::Utility`], never in a
//! harmless-looking kind. Not guaranteed: the kind says what the statement *is*, not everything
//! it *does* — `SELECT f()` may write through `f`. That is what the other facts are for.

use pg_query::NodeEnum;
use serde::{Deserialize, Serialize};

/// The coarse verb of one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    Create,
    Alter,
    Drop,
    Truncate,
    Grant,
    Revoke,
    Copy,
    Call,
    Do,
    /// `SET`, `RESET`, `SET CONSTRAINTS`, `DISCARD`.
    Set,
    Show,
    /// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `PREPARE TRANSACTION`, ...
    Transaction,
    Prepare,
    Execute,
    Deallocate,
    Explain,
    /// `LISTEN` and `UNLISTEN`.
    Listen,
    Notify,
    /// `DECLARE`, `FETCH`, `MOVE`, `CLOSE`.
    Cursor,
    /// `VACUUM` and `ANALYZE`.
    Vacuum,
    Lock,
    /// Anything else: `CLUSTER`, `REINDEX`, `REFRESH MATERIALIZED VIEW`, `CHECKPOINT`, `LOAD`,
    /// `COMMENT`, `SECURITY LABEL`, ...
    Utility,
}

impl StatementKind {
    /// Every kind, in declaration order.
    pub const ALL: &[StatementKind] = &[
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Merge,
        Self::Create,
        Self::Alter,
        Self::Drop,
        Self::Truncate,
        Self::Grant,
        Self::Revoke,
        Self::Copy,
        Self::Call,
        Self::Do,
        Self::Set,
        Self::Show,
        Self::Transaction,
        Self::Prepare,
        Self::Execute,
        Self::Deallocate,
        Self::Explain,
        Self::Listen,
        Self::Notify,
        Self::Cursor,
        Self::Vacuum,
        Self::Lock,
        Self::Utility,
    ];

    /// The lower-case name used in policy files and audit records.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Merge => "merge",
            Self::Create => "create",
            Self::Alter => "alter",
            Self::Drop => "drop",
            Self::Truncate => "truncate",
            Self::Grant => "grant",
            Self::Revoke => "revoke",
            Self::Copy => "copy",
            Self::Call => "call",
            Self::Do => "do",
            Self::Set => "set",
            Self::Show => "show",
            Self::Transaction => "transaction",
            Self::Prepare => "prepare",
            Self::Execute => "execute",
            Self::Deallocate => "deallocate",
            Self::Explain => "explain",
            Self::Listen => "listen",
            Self::Notify => "notify",
            Self::Cursor => "cursor",
            Self::Vacuum => "vacuum",
            Self::Lock => "lock",
            Self::Utility => "utility",
        }
    }

    /// Parses a kind name, ignoring ASCII case (`"SELECT"` and `"select"` both work).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }

    /// Whether statements of this kind change table rows.
    pub fn modifies_rows(&self) -> bool {
        matches!(
            self,
            Self::Insert | Self::Update | Self::Delete | Self::Merge
        )
    }
}

impl std::fmt::Display for StatementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a top-level (or wrapped) statement node. `GRANT` vs `REVOKE` is decided here
/// from `is_grant`; everything else only from the node type.
pub(crate) fn kind_of(node: &NodeEnum) -> StatementKind {
    use NodeEnum as N;
    use StatementKind as K;
    match node {
        N::SelectStmt(_) | N::SetOperationStmt(_) | N::PlassignStmt(_) | N::ReturnStmt(_) => {
            K::Select
        }
        N::InsertStmt(_) => K::Insert,
        N::UpdateStmt(_) => K::Update,
        N::DeleteStmt(_) => K::Delete,
        N::MergeStmt(_) => K::Merge,
        N::CreateSchemaStmt(_)
        | N::CreateStmt(_)
        | N::CreateTableSpaceStmt(_)
        | N::CreateExtensionStmt(_)
        | N::CreateFdwStmt(_)
        | N::CreateForeignServerStmt(_)
        | N::CreateForeignTableStmt(_)
        | N::CreateUserMappingStmt(_)
        | N::ImportForeignSchemaStmt(_)
        | N::CreatePolicyStmt(_)
        | N::CreateAmStmt(_)
        | N::CreateTrigStmt(_)
        | N::CreateEventTrigStmt(_)
        | N::CreatePlangStmt(_)
        | N::CreateRoleStmt(_)
        | N::CreateSeqStmt(_)
        | N::DefineStmt(_)
        | N::CreateDomainStmt(_)
        | N::CreateOpClassStmt(_)
        | N::CreateOpFamilyStmt(_)
        | N::IndexStmt(_)
        | N::CreateStatsStmt(_)
        | N::CreateFunctionStmt(_)
        | N::RuleStmt(_)
        | N::CompositeTypeStmt(_)
        | N::CreateEnumStmt(_)
        | N::CreateRangeStmt(_)
        | N::ViewStmt(_)
        | N::CreatedbStmt(_)
        | N::CreateTableAsStmt(_)
        | N::CreateConversionStmt(_)
        | N::CreateCastStmt(_)
        | N::CreateTransformStmt(_)
        | N::CreatePublicationStmt(_)
        | N::CreateSubscriptionStmt(_) => K::Create,
        N::AlterTableStmt(_)
        | N::ReplicaIdentityStmt(_)
        | N::AlterCollationStmt(_)
        | N::AlterDomainStmt(_)
        | N::AlterDefaultPrivilegesStmt(_)
        | N::AlterTableSpaceOptionsStmt(_)
        | N::AlterTableMoveAllStmt(_)
        | N::AlterExtensionStmt(_)
        | N::AlterExtensionContentsStmt(_)
        | N::AlterFdwStmt(_)
        | N::AlterForeignServerStmt(_)
        | N::AlterUserMappingStmt(_)
        | N::AlterPolicyStmt(_)
        | N::AlterEventTrigStmt(_)
        | N::AlterRoleStmt(_)
        | N::AlterRoleSetStmt(_)
        | N::AlterSeqStmt(_)
        | N::AlterOpFamilyStmt(_)
        | N::AlterStatsStmt(_)
        | N::AlterFunctionStmt(_)
        | N::RenameStmt(_)
        | N::AlterObjectDependsStmt(_)
        | N::AlterObjectSchemaStmt(_)
        | N::AlterOwnerStmt(_)
        | N::AlterOperatorStmt(_)
        | N::AlterTypeStmt(_)
        | N::AlterEnumStmt(_)
        | N::AlterDatabaseStmt(_)
        | N::AlterDatabaseRefreshCollStmt(_)
        | N::AlterDatabaseSetStmt(_)
        | N::AlterSystemStmt(_)
        | N::ReassignOwnedStmt(_)
        | N::AlterTsdictionaryStmt(_)
        | N::AlterTsconfigurationStmt(_)
        | N::AlterPublicationStmt(_)
        | N::AlterSubscriptionStmt(_) => K::Alter,
        N::DropStmt(_)
        | N::DropTableSpaceStmt(_)
        | N::DropUserMappingStmt(_)
        | N::DropRoleStmt(_)
        | N::DropdbStmt(_)
        | N::DropOwnedStmt(_)
        | N::DropSubscriptionStmt(_) => K::Drop,
        N::TruncateStmt(_) => K::Truncate,
        N::GrantStmt(s) if s.is_grant => K::Grant,
        N::GrantRoleStmt(s) if s.is_grant => K::Grant,
        N::GrantStmt(_) | N::GrantRoleStmt(_) => K::Revoke,
        N::CopyStmt(_) => K::Copy,
        N::CallStmt(_) => K::Call,
        N::DoStmt(_) => K::Do,
        N::VariableSetStmt(_) | N::ConstraintsSetStmt(_) | N::DiscardStmt(_) => K::Set,
        N::VariableShowStmt(_) => K::Show,
        N::TransactionStmt(_) => K::Transaction,
        N::PrepareStmt(_) => K::Prepare,
        N::ExecuteStmt(_) => K::Execute,
        N::DeallocateStmt(_) => K::Deallocate,
        N::ExplainStmt(_) => K::Explain,
        N::ListenStmt(_) | N::UnlistenStmt(_) => K::Listen,
        N::NotifyStmt(_) => K::Notify,
        N::DeclareCursorStmt(_) | N::FetchStmt(_) | N::ClosePortalStmt(_) => K::Cursor,
        N::VacuumStmt(_) => K::Vacuum,
        N::LockStmt(_) => K::Lock,
        _ => K::Utility,
    }
}
