"""DCAT-AP 3 export of the catalog: metadata of every entry, never data, built with rdflib.

The JSON-LD @context is written here as a dict, so serialising never fetches anything.
"""

from __future__ import annotations

from datetime import UTC
from enum import StrEnum
from urllib.parse import quote

from rdflib import BNode, Graph, Literal, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS, FOAF, RDF, XSD

from citybrain.governance.catalog.models import (
    CatalogEntry,
    EntryKind,
    Frequency,
    SharingType,
    Theme,
)

EU_THEME = Namespace("http://publications.europa.eu/resource/authority/data-theme/")
EU_FREQUENCY = Namespace("http://publications.europa.eu/resource/authority/frequency/")
EU_ACCESS = Namespace("http://publications.europa.eu/resource/authority/access-right/")
EU_FILE_TYPE = Namespace("http://publications.europa.eu/resource/authority/file-type/")

THEMES: dict[Theme, str] = {
    Theme.population: "SOCI",
    Theme.education: "EDUC",
    Theme.health: "HEAL",
    Theme.social_security: "SOCI",
    Theme.housing: "REGI",
    Theme.transport: "TRAN",
    Theme.environment: "ENVI",
    Theme.public_safety: "JUST",
    Theme.economy: "ECON",
    Theme.urban_management: "REGI",
    Theme.other: "GOVE",
}
FREQUENCIES: dict[Frequency, str] = {
    Frequency.realtime: "UPDATE_CONT",
    Frequency.daily: "DAILY",
    Frequency.weekly: "WEEKLY",
    Frequency.monthly: "MONTHLY",
    Frequency.quarterly: "QUARTERLY",
    Frequency.yearly: "ANNUAL",
    Frequency.irregular: "IRREG",
}

CONTEXT: dict[str, object] = {
    "dcat": str(DCAT),
    "dct": str(DCTERMS),
    "foaf": str(FOAF),
    "xsd": str(XSD),
    "rdf": str(RDF),
}


class DcatFormat(StrEnum):
    """Serialisations of the DCAT export."""

    jsonld = "jsonld"
    turtle = "turtle"


MEDIA_TYPES = {DcatFormat.jsonld: "application/ld+json", DcatFormat.turtle: "text/turtle"}


def access_right(entry: CatalogEntry) -> URIRef:
    """Return the EU access right of an entry: open data is public, not-shared non-public."""
    if entry.open_data:
        return EU_ACCESS.PUBLIC
    if entry.sharing_type is SharingType.not_shared:
        return EU_ACCESS.NON_PUBLIC
    return EU_ACCESS.RESTRICTED


def dataset_uri(base_url: str, dataset_id: str) -> URIRef:
    """Return the URI naming a dataset of this node."""
    return URIRef(f"{base_url}/api/catalog/{quote(dataset_id, safe='/:')}")


def catalog_graph(
    *, entries: list[CatalogEntry], node_code: str, node_name: str, base_url: str
) -> Graph:
    """Build the DCAT-AP graph of a node's catalog."""
    base_url = base_url.rstrip("/")
    g = Graph(bind_namespaces="none")
    for prefix, ns in CONTEXT.items():
        g.bind(prefix, Namespace(str(ns)))
    catalog = URIRef(f"{base_url}/catalog/dcat")
    node = URIRef(f"{base_url}/#node")
    g.add((catalog, RDF.type, DCAT.Catalog))
    g.add((catalog, DCTERMS.title, Literal(f"{node_name}数据目录", lang="zh")))
    g.add(
        (catalog, DCTERMS.title, Literal(f"Data catalog of CityBrain node {node_code}", lang="en"))
    )
    g.add(
        (
            catalog,
            DCTERMS.description,
            Literal(f"Datasets held by the CityBrain node {node_code}: metadata only.", lang="en"),
        )
    )
    g.add((catalog, DCTERMS.publisher, node))
    g.add((node, RDF.type, FOAF.Agent))
    g.add((node, FOAF.name, Literal(node_name, lang="zh")))
    g.add((node, DCTERMS.identifier, Literal(node_code)))
    for entry in entries:
        ds = dataset_uri(base_url, entry.id)
        g.add((catalog, DCAT.dataset, ds))
        g.add((ds, RDF.type, DCAT.Dataset))
        g.add((ds, DCTERMS.identifier, Literal(entry.id)))
        if entry.title_zh:
            g.add((ds, DCTERMS.title, Literal(entry.title_zh, lang="zh")))
        if entry.title_en:
            g.add((ds, DCTERMS.title, Literal(entry.title_en, lang="en")))
        if entry.description:
            g.add((ds, DCTERMS.description, Literal(entry.description)))
        owner = URIRef(f"{base_url}/#org-{quote(entry.owner_department)}")
        g.add((ds, DCTERMS.publisher, owner))
        g.add((owner, RDF.type, FOAF.Agent))
        g.add((owner, FOAF.name, Literal(entry.owner_department)))
        g.add((ds, DCAT.theme, EU_THEME[THEMES[entry.theme]]))
        g.add((ds, DCTERMS.accrualPeriodicity, EU_FREQUENCY[FREQUENCIES[entry.update_frequency]]))
        g.add((ds, DCTERMS.accessRights, access_right(entry)))
        modified = entry.last_updated or entry.updated_at
        g.add(
            (
                ds,
                DCTERMS.modified,
                Literal(
                    modified.astimezone(UTC).isoformat(timespec="seconds"), datatype=XSD.dateTime
                ),
            )
        )
        g.add(
            (
                ds,
                DCTERMS.issued,
                Literal(
                    entry.created_at.astimezone(UTC).isoformat(timespec="seconds"),
                    datatype=XSD.dateTime,
                ),
            )
        )
        for word in dict.fromkeys([*entry.keywords, entry.theme.value]):
            g.add((ds, DCAT.keyword, Literal(word)))
        distribution = BNode(f"dist-{quote(entry.id, safe='')}".replace("%", "_"))
        g.add((ds, DCAT.distribution, distribution))
        g.add((distribution, RDF.type, DCAT.Distribution))
        if entry.kind is EntryKind.table:
            department, _, name = entry.id.partition("/")
            url = f"{base_url}/api/tables/{department}/{name}/records"
            g.add((distribution, DCTERMS.format, EU_FILE_TYPE.JSON))
            g.add(
                (
                    distribution,
                    DCAT.mediaType,
                    URIRef("http://www.iana.org/assignments/media-types/application/json"),
                )
            )
        else:
            type_name = entry.id.removeprefix("ngsi-ld:")
            url = f"{base_url}/ngsi-ld/v1/entities?type={quote(type_name)}"
            g.add((distribution, DCTERMS.format, EU_FILE_TYPE.JSON_LD))
            g.add(
                (
                    distribution,
                    DCAT.mediaType,
                    URIRef("http://www.iana.org/assignments/media-types/application/ld+json"),
                )
            )
        g.add((distribution, DCAT.accessURL, URIRef(url)))
        g.add((distribution, DCTERMS.accessRights, access_right(entry)))
    return g


def serialise(graph: Graph, fmt: DcatFormat) -> str:
    """Serialise the graph as JSON-LD (inline @context) or Turtle."""
    if fmt is DcatFormat.turtle:
        return graph.serialize(format="turtle")
    return graph.serialize(format="json-ld", context=dict(CONTEXT), auto_compact=True)
