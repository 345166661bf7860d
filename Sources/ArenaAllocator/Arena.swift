import ArenaCore
