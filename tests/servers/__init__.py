"""Tests against real Redis and Postgres (the machine's, or throwaway ones): graphs, tiers, tenancy, conformance."""
