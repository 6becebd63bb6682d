"""Tables of the enrollment scene (migration 0017): seasons, applications, appeals, notices."""

from __future__ import annotations

import sqlalchemy as sa

from citybrain.core.db import metadata

enrollment_seasons = sa.Table(
    "enrollment_seasons",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # <node code>-<year>
    sa.Column("node_code", sa.String(12), nullable=False),
    sa.Column("year", sa.Integer, nullable=False),
    # open -> closed -> drawn -> published
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("counties", sa.JSON, nullable=False),  # county codes the season covers
    sa.Column("opens_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
    sa.Column("grants", sa.JSON, nullable=False),  # what -> grant id the season works under
    sa.Column("draws", sa.JSON, nullable=False),  # county -> draw summary (commitment, folder)
    sa.Column("opened_by", sa.String(256), nullable=False),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("drawn_at", sa.DateTime(timezone=True)),
    sa.Column("published_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("node_code", "year", name="uq_enrollment_seasons_node_code"),
)

enrollment_applications = sa.Table(
    "enrollment_applications",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("season_id", sa.String(32), nullable=False),
    sa.Column("county_code", sa.String(12), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("child_id_number", sa.String(18), nullable=False),
    sa.Column("child_name", sa.String(64), nullable=False),  # masked, as the gate showed it
    sa.Column("child", sa.String(40), nullable=False),  # pseudonym published in the draw
    sa.Column("parent_phone", sa.String(16), nullable=False),
    sa.Column("parent_id_number", sa.String(18), nullable=False),
    sa.Column("household_id", sa.String(40), nullable=False),
    sa.Column("basis", sa.String(16), nullable=False),  # hukou | property | residence
    sa.Column("address_id", sa.String(40)),
    sa.Column("zone_id", sa.String(40), nullable=False),
    sa.Column("choices", sa.JSON, nullable=False),  # school ids, best first
    sa.Column("lon", sa.Float, nullable=False),
    sa.Column("lat", sa.Float, nullable=False),
    sa.Column("sibling", sa.Boolean, nullable=False),
    sa.Column("checks", sa.JSON, nullable=False),  # criterion -> true/false
    sa.Column("priority_class", sa.Integer),  # index in the county's class order; None: none
    sa.Column("class_name", sa.String(64)),
    sa.Column("reason", sa.Text, nullable=False),
    # eligible | not_eligible | placed | unplaced
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("school_id", sa.String(40)),
    sa.Column("stage", sa.String(16)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint(
        "season_id", "child_id_number", name="uq_enrollment_applications_season_id"
    ),
    sa.Index("ix_enrollment_applications_parent", "season_id", "parent_phone"),
    sa.Index("ix_enrollment_applications_county", "season_id", "county_code", "level"),
)

enrollment_appeals = sa.Table(
    "enrollment_appeals",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("application_id", sa.String(32), nullable=False),
    sa.Column("season_id", sa.String(32), nullable=False),
    sa.Column("county_code", sa.String(12), nullable=False),
    sa.Column("criterion", sa.String(64), nullable=False),  # the check the parent disputes
    sa.Column("statement", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | upheld | dismissed
    sa.Column("decision_reason", sa.Text),
    sa.Column("decided_by", sa.String(256)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_enrollment_appeals_application", "application_id"),
    sa.Index("ix_enrollment_appeals_season", "season_id", "status"),
)

enrollment_notices = sa.Table(
    "enrollment_notices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("application_id", sa.String(32), nullable=False),
    sa.Column("parent_phone", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_enrollment_notices_phone", "parent_phone"),
)

# the province's copy of its children's statistics: the last answer of each child stays
enrollment_child_stats = sa.Table(
    "enrollment_child_stats",
    metadata,
    sa.Column("child_code", sa.String(12), primary_key=True),
    sa.Column("year", sa.Integer, primary_key=True),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
)
