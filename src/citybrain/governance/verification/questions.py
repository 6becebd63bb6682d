"""The yes/no questions the verification service answers, each over named tables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Question:
    """A yes/no question: the dataset its grant is on, its parameters and its SQL."""

    name: str
    dataset: str  # the dataset a verification grant must cover
    tables: tuple[str, ...]  # every table the SQL reads
    params: tuple[str, ...]  # parameter names, in the order the SQL binds them
    sql: str  # SELECT returning one row with one boolean
    description: str


QUESTIONS: dict[str, Question] = {
    q.name: q
    for q in (
        Question(
            name="hukou_at_address",
            dataset="public_security/residents",
            tables=("public_security/residents",),
            params=("id_number", "address_id"),
            sql=(
                "select count(*) > 0 from public_security.residents "
                "where id_number = ? and address_id = ? and hukou_county = residence_county"
            ),
            description="Is this ID number's household registration (hukou) at this address?",
        ),
        Question(
            name="hukou_in_county",
            dataset="public_security/residents",
            tables=("public_security/residents",),
            params=("id_number", "county_code"),
            sql=(
                "select count(*) > 0 from public_security.residents "
                "where id_number = ? and hukou_county = ?"
            ),
            description="Is this ID number's household registration in this county?",
        ),
        Question(
            name="owns_property_in_communities",
            dataset="natural_resources/property_registry",
            tables=("natural_resources/property_registry", "public_security/addresses"),
            params=("id_number", "community_codes"),
            sql=(
                "select count(*) > 0 from natural_resources.property_registry p "
                "join public_security.addresses a on a.address_id = p.address_id "
                "where p.owner_id_number = ? and list_contains(string_split(?, ','), "
                "a.community_code) and p.usage in ('住宅', '商住')"
            ),
            description=(
                "Does this person own a home in these communities (a catchment zone's "
                "community codes, comma-separated)?"
            ),
        ),
        Question(
            name="social_insurance_months",
            dataset="human_resources/social_insurance",
            tables=("human_resources/social_insurance",),
            params=("id_number", "months"),
            sql=(
                "select count(*) > 0 from human_resources.social_insurance "
                "where id_number = ? and months_contributed >= cast(? as integer)"
            ),
            description="Has this person paid social insurance for at least this many months?",
        ),
        Question(
            name="residence_permit_valid",
            dataset="public_security/residence_permits",
            tables=("public_security/residence_permits",),
            params=("id_number", "on_date"),
            sql=(
                "select count(*) > 0 from public_security.residence_permits "
                "where id_number = ? and cast(valid_until as date) >= cast(? as date)"
            ),
            description="Does this person hold a residence permit valid on this date?",
        ),
        Question(
            name="medically_insured",
            dataset="medical_security/insured_persons",
            tables=("medical_security/insured_persons",),
            params=("id_number",),
            sql=(
                "select count(*) > 0 from medical_security.insured_persons "
                "where id_number = ? and status = '参保缴费'"
            ),
            description="Is this person insured by basic medical insurance?",
        ),
    )
}
