"""The apiplus workers; each subpackage is one independently run service."""
