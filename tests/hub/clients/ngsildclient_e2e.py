"""Drive a CityBrain node with the unmodified ngsildclient package (run in its own venv)."""

import sys

from ngsildclient import Client, Entity

host, port = sys.argv[1], int(sys.argv[2])
client = Client(hostname=host, port=port, verbose=False)  # runs the connectivity probes

sensor = Entity("AirQualityObserved", "Jinan:Lixia:001")
sensor.prop("pm25", 35, unitcode="GQ", observedat="2026-11-24T10:00:00Z")
sensor.gprop("location", (36.65, 117.0))
sensor.rel("refDevice", "urn:ngsi-ld:Device:001")
assert client.create(sensor), "create failed"
assert client.exists(sensor)

fetched = client.get(sensor.id)
assert fetched["pm25"]["value"] == 35, fetched.to_dict()

batch = []
for i in range(50):
    e = Entity("AirQualityObserved", f"Jinan:Batch:{i:03d}")
    e.prop("pm25", i)
    batch.append(e)
result = client.upsert(batch)
assert result.ok if hasattr(result, "ok") else result, result
assert client.count("AirQualityObserved") == 51
high = client.query(type="AirQualityObserved", q="pm25>40")
assert sorted(e.id for e in high) == sorted(
    [f"urn:ngsi-ld:AirQualityObserved:Jinan:Batch:{i:03d}" for i in range(41, 50)]
), [e.id for e in high]

sensor["pm25"].value = 80
assert client.update(sensor)
assert client.get(sensor.id)["pm25"]["value"] == 80
client.delete(sensor)
assert not client.exists(sensor)
print("ngsildclient ok")
