"""Who is calling and what they may read: identities, policies, and the audit trail."""
