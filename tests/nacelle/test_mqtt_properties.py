"""nacelle.mqtt's shared paho property tables: instances look and behave as paho makes them."""

from __future__ import annotations

import pytest
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nacelle.mqtt import _PAHO_PROPERTIES_INIT


@pytest.mark.parametrize("packet_type", [PacketTypes.PUBLISH, PacketTypes.PUBACK, PacketTypes.CONNECT])
def test_an_instance_holds_what_pahos_own_constructor_gives_it(packet_type: int) -> None:
    ours = Properties(packet_type)
    theirs = object.__new__(Properties)
    _PAHO_PROPERTIES_INIT(theirs, packet_type)
    assert vars(ours) == vars(theirs)


def test_values_stay_per_instance_and_round_trip_through_the_wire_format() -> None:
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 604800
    publish = Properties(PacketTypes.PUBLISH)
    publish.UserProperty = ("node", "offshore-t00001")
    assert not hasattr(Properties(PacketTypes.CONNECT), "SessionExpiryInterval")

    decoded = Properties(PacketTypes.PUBLISH)
    decoded.unpack(publish.pack())
    assert decoded.UserProperty == [("node", "offshore-t00001")]
    decoded_connect = Properties(PacketTypes.CONNECT)
    decoded_connect.unpack(connect.pack())
    assert decoded_connect.SessionExpiryInterval == 604800
    with pytest.raises(MQTTException, match="does not apply"):
        Properties(PacketTypes.PUBACK).SessionExpiryInterval = 1
